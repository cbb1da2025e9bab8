"""LlamaIndex `MetadataFilters` as qdrant-edge filters (pure: no I/O, no engine state).

AND -> must, OR -> should, NOT -> must_not; every LlamaIndex operator Qdrant can express is
translated, and the rest raise a ValueError naming the operator, the key and what to do.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, List, Optional

import qdrant_edge as qe
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from rag.stores.filter_tree import conjunction, translate
from rag.stores.payload import point_id_for

DOC_ID_KEY = "doc_id"  # same key the stock QdrantVectorStore filters on

_SUPPORTED_OPERATORS = (
    "==, !=, >, >=, <, <=, in, nin, any, all, contains, text_match, "
    "text_match_insensitive, is_empty"
)


def _unsupported(f: MetadataFilter, why: str) -> ValueError:
    op = getattr(f.operator, "value", f.operator)
    name = getattr(f.operator, "name", str(f.operator))
    return ValueError(
        f"Metadata filter operator {name} ({op!r}) on key {f.key!r} with value "
        f"{f.value!r} is not supported by QdrantEdgeVectorStore: {why}"
    )


def _is_float(v: Any) -> bool:
    return isinstance(v, float)


def _eq_range(key: str, value: float) -> qe.FieldCondition:
    return qe.FieldCondition(key, range=qe.RangeFloat(gte=value, lte=value))


def _as_list(f: MetadataFilter) -> List[Any]:
    """List value of IN/NIN/ANY/ALL; a string is split on commas like the stock store."""
    v = f.value
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, str):
        return v.split(",")
    if v is None:
        raise _unsupported(f, "it needs a list of values")
    return [v]


def _match_list(f: MetadataFilter, values: List[Any], cls: Any) -> Any:
    """MatchAny/MatchExcept take a list of all-strings or all-integers."""
    if all(isinstance(v, str) for v in values):
        return cls(values)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return cls(values)
    raise _unsupported(
        f,
        "Qdrant matches a list of values only when all are strings or all are "
        "integers; split the filter (one == / != per value) or normalise the types",
    )


def _range(f: MetadataFilter, bound: str) -> qe.FieldCondition:
    v = f.value
    if isinstance(v, bool) or v is None:
        raise _unsupported(f, "ranges compare numbers or ISO-8601 datetimes")
    if isinstance(v, (int, float)):
        return qe.FieldCondition(f.key, range=qe.RangeFloat(**{bound: float(v)}))
    if isinstance(v, str):
        try:
            _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise _unsupported(
                f, "ranges compare numbers or ISO-8601 datetimes, not arbitrary strings"
            ) from None
        return qe.FieldCondition(f.key, range=qe.RangeDateTime(**{bound: v}))
    raise _unsupported(f, "ranges compare numbers or ISO-8601 datetimes")


def _condition(f: MetadataFilter) -> Any:
    """One LlamaIndex MetadataFilter as one Qdrant condition."""
    op = f.operator or FilterOperator.EQ
    key, v = f.key, f.value
    if op == FilterOperator.EQ:
        if v is None:
            return qe.IsNullCondition(key)
        if _is_float(v):  # MatchValue has no floats; an exact range does the job
            return _eq_range(key, v)
        if isinstance(v, (str, int)):
            return qe.FieldCondition(key, match=qe.MatchValue(v))
        raise _unsupported(f, "== takes one string, number or boolean (use in/any for lists)")
    if op == FilterOperator.NE:
        # Like the stock store (MatchExcept): matches points whose field exists and differs.
        if isinstance(v, bool):
            return qe.FieldCondition(key, match=qe.MatchValue(not v))
        if _is_float(v):
            return qe.Filter(
                should=[
                    qe.FieldCondition(key, range=qe.RangeFloat(lt=v)),
                    qe.FieldCondition(key, range=qe.RangeFloat(gt=v)),
                ]
            )
        if isinstance(v, (str, int)):
            return qe.FieldCondition(key, match=qe.MatchExcept([v]))
        raise _unsupported(f, "!= takes one string, number or boolean (use nin for lists)")
    if op == FilterOperator.GT:
        return _range(f, "gt")
    if op == FilterOperator.GTE:
        return _range(f, "gte")
    if op == FilterOperator.LT:
        return _range(f, "lt")
    if op == FilterOperator.LTE:
        return _range(f, "lte")
    if op in (FilterOperator.IN, FilterOperator.ANY):
        # On a scalar field: value is one of; on a list field: shares any element.
        values = _as_list(f)
        if values and all(_is_float(x) or isinstance(x, int) for x in values) and any(
            _is_float(x) for x in values
        ):
            return qe.Filter(should=[_eq_range(key, float(x)) for x in values])
        return qe.FieldCondition(key, match=_match_list(f, values, qe.MatchAny))
    if op == FilterOperator.NIN:
        values = _as_list(f)
        if any(_is_float(x) for x in values):
            raise _unsupported(
                f, "Qdrant's match-except takes strings or integers, not floats"
            )
        return qe.FieldCondition(key, match=_match_list(f, values, qe.MatchExcept))
    if op == FilterOperator.ALL:
        values = _as_list(f)
        return qe.Filter(must=[_condition(MetadataFilter(key=key, value=x)) for x in values])
    if op == FilterOperator.CONTAINS:
        if isinstance(v, (list, tuple)) or v is None:
            raise _unsupported(f, "contains takes one value (use all/any for several)")
        return _condition(MetadataFilter(key=key, value=v, operator=FilterOperator.EQ))
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        if not isinstance(v, str):
            raise _unsupported(f, "text matching needs a string")
        # Qdrant's full-text match: every word of the query must occur as a word of
        # the field; the default tokenizer lowercases, so it is case-insensitive.
        return qe.FieldCondition(key, match=qe.MatchText(v))
    if op == FilterOperator.IS_EMPTY:
        return qe.IsEmptyCondition(key)
    raise _unsupported(f, f"supported operators are {_SUPPORTED_OPERATORS}")


def build_filter(filters: Optional[MetadataFilters]) -> Optional[qe.Filter]:
    """Translate (nested) LlamaIndex MetadataFilters into a Qdrant filter.

    AND -> must, OR -> should, NOT -> must_not (none of the conditions may match).
    Empty (nested) filter groups are skipped; returns None when nothing is left.
    Raises ValueError naming the operator for what Qdrant cannot express.
    """
    return translate(filters, _condition, qe.Filter)


def all_of(*parts: Optional[Any]) -> Optional[qe.Filter]:
    """The conjunction of the conditions given (None ones skipped); None when there are none."""
    return conjunction(list(parts), qe.Filter)


def document_filter(ref_doc_id: str) -> qe.Filter:
    """Every point of one source document."""
    return qe.Filter(must=[qe.FieldCondition(DOC_ID_KEY, match=qe.MatchValue(ref_doc_id))])


def selection_filter(node_ids: Optional[List[str]], filters: Optional[MetadataFilters]) -> Optional[qe.Filter]:
    """Points by node id and/or metadata filter (both: points matching both); None: all."""
    has_id = None
    if node_ids is not None:
        has_id = qe.HasIdCondition({point_id_for(i) for i in node_ids})
    return all_of(has_id, build_filter(filters))


def query_filter(query: VectorStoreQuery) -> Optional[qe.Filter]:
    """A query's restrictions: its doc_ids, node_ids and metadata filters, all at once."""
    doc_cond = None
    if query.doc_ids:
        doc_cond = qe.FieldCondition(DOC_ID_KEY, match=qe.MatchAny(list(query.doc_ids)))
    id_cond = None
    if query.node_ids:
        id_cond = qe.HasIdCondition({point_id_for(i) for i in query.node_ids})
    return all_of(doc_cond, id_cond, build_filter(query.filters))
