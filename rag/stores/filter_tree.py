"""The shape both Qdrant filter dialects share: LlamaIndex's filter tree as must/should/must_not.

qdrant-edge (`qe.Filter`) and qdrant-client (`models.Filter`) spell a filter the same way;
only the leaf conditions differ (`rag.stores.edge_filters`, `rag.stores.server_filters`). Pure.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from llama_index.core.vector_stores.types import FilterCondition, MetadataFilter, MetadataFilters


def translate(filters: Optional[MetadataFilters], leaf: Callable[[MetadataFilter], Any], make: Callable[..., Any]) -> Any:
    """`filters` as a Qdrant filter: AND -> must, OR -> should, NOT -> must_not (none may match).

    `leaf` turns one `MetadataFilter` into a condition, `make(must=/should=/must_not=)` builds a
    filter. Empty (nested) groups are skipped; None when nothing is left.
    """
    if filters is None:
        return None
    conditions: List[Any] = []
    for sub in filters.filters:
        if isinstance(sub, MetadataFilters):
            nested = translate(sub, leaf, make)
            if nested is not None:
                conditions.append(nested)
        else:
            conditions.append(leaf(sub))
    if not conditions:
        return None
    joined = filters.condition or FilterCondition.AND
    if joined == FilterCondition.AND:
        return make(must=conditions)
    if joined == FilterCondition.OR:
        return make(should=conditions)
    if joined == FilterCondition.NOT:
        return make(must_not=conditions)
    raise ValueError(f"Unknown filter condition {joined!r}; expected and, or, not")


def conjunction(parts: List[Optional[Any]], filter_class: type) -> Any:
    """The conjunction of the conditions given (None ones skipped) as a `filter_class`; None when
    there are none. A lone filter is returned as it is."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    if len(present) == 1 and isinstance(present[0], filter_class):
        return present[0]
    return filter_class(must=present)
