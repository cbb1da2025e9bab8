"""LlamaIndex `MetadataFilters` as qdrant-client filters, for the server signal store (pure).

The same rules as `rag.stores.edge_filters.build_filter` (the embedded engine), written with
qdrant-client's models, so a filter selects the same points on both backends: AND -> must,
OR -> should, NOT -> must_not; every operator Qdrant can express is translated, the rest
raise a ValueError naming the operator, the key and what to do instead.

The stock `QdrantVectorStore` builds its filters inside the store and rejects several of
these operators (== None, != on floats, ranges over datetimes, any, all, contains), so its
converter is not reused here.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, List, Optional

from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from qdrant_client import models

from rag.stores.filter_tree import conjunction, translate

SUPPORTED_OPERATORS = "==, !=, >, >=, <, <=, in, nin, any, all, contains, text_match, text_match_insensitive, is_empty"


def _unsupported(f: MetadataFilter, why: str) -> ValueError:
    op = getattr(f.operator, "value", f.operator)
    name = getattr(f.operator, "name", str(f.operator))
    return ValueError(f"Metadata filter operator {name} ({op!r}) on key {f.key!r} with value {f.value!r} "
                      f"is not supported by the Qdrant server's signal store: {why}")


def _equal_float(key: str, value: float) -> models.FieldCondition:
    # MatchValue takes no floats; an exact range does the job
    return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))


def _values(f: MetadataFilter) -> List[Any]:
    """The list of in/nin/any/all; a string is split on commas like the stock store."""
    if isinstance(f.value, (list, tuple)):
        return list(f.value)
    if isinstance(f.value, str):
        return f.value.split(",")
    if f.value is None:
        raise _unsupported(f, "it needs a list of values")
    return [f.value]


def _check_list(f: MetadataFilter, values: List[Any]) -> List[Any]:
    """MatchAny / MatchExcept take all strings or all integers."""
    if all(isinstance(v, str) for v in values) or all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return values
    raise _unsupported(f, "Qdrant matches a list of values only when all are strings or all are integers; "
                          "split the filter (one == / != per value) or normalise the types")


def _range(f: MetadataFilter, bound: str) -> models.FieldCondition:
    v = f.value
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return models.FieldCondition(key=f.key, range=models.Range(**{bound: float(v)}))
    if isinstance(v, str):
        try:
            _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise _unsupported(f, "ranges compare numbers or ISO-8601 datetimes, not arbitrary strings") from None
        return models.FieldCondition(key=f.key, range=models.DatetimeRange(**{bound: v}))
    raise _unsupported(f, "ranges compare numbers or ISO-8601 datetimes")


def _equal(f: MetadataFilter) -> Any:
    key, v = f.key, f.value
    if v is None:
        return models.IsNullCondition(is_null=models.PayloadField(key=key))
    if isinstance(v, float):
        return _equal_float(key, v)
    if isinstance(v, (str, int)):
        return models.FieldCondition(key=key, match=models.MatchValue(value=v))
    raise _unsupported(f, "== takes one string, number or boolean (use in/any for lists)")


def _not_equal(f: MetadataFilter) -> Any:
    # like the stock store (match-except): points whose field exists and differs
    key, v = f.key, f.value
    if isinstance(v, bool):
        return models.FieldCondition(key=key, match=models.MatchValue(value=not v))
    if isinstance(v, float):
        return models.Filter(should=[models.FieldCondition(key=key, range=models.Range(lt=v)),
                                     models.FieldCondition(key=key, range=models.Range(gt=v))])
    if isinstance(v, (str, int)):
        return models.FieldCondition(key=key, match=models.MatchExcept(**{"except": [v]}))
    raise _unsupported(f, "!= takes one string, number or boolean (use nin for lists)")


_RANGES = {FilterOperator.GT: "gt", FilterOperator.GTE: "gte", FilterOperator.LT: "lt", FilterOperator.LTE: "lte"}


def condition(f: MetadataFilter) -> Any:
    """One LlamaIndex `MetadataFilter` as one qdrant-client condition."""
    op = f.operator or FilterOperator.EQ
    key, v = f.key, f.value
    if op == FilterOperator.EQ:
        return _equal(f)
    if op == FilterOperator.NE:
        return _not_equal(f)
    if op in _RANGES:
        return _range(f, _RANGES[op])
    if op in (FilterOperator.IN, FilterOperator.ANY):
        # on a scalar field: the value is one of these; on a list field: shares one of them
        values = _values(f)
        if values and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values) \
                and any(isinstance(x, float) for x in values):
            return models.Filter(should=[_equal_float(key, float(x)) for x in values])
        return models.FieldCondition(key=key, match=models.MatchAny(any=_check_list(f, values)))
    if op == FilterOperator.NIN:
        values = _values(f)
        if any(isinstance(x, float) for x in values):
            raise _unsupported(f, "Qdrant's match-except takes strings or integers, not floats")
        return models.FieldCondition(key=key, match=models.MatchExcept(**{"except": _check_list(f, values)}))
    if op == FilterOperator.ALL:
        return models.Filter(must=[_equal(MetadataFilter(key=key, value=x)) for x in _values(f)])
    if op == FilterOperator.CONTAINS:
        if isinstance(v, (list, tuple)) or v is None:
            raise _unsupported(f, "contains takes one value (use all/any for several)")
        return _equal(MetadataFilter(key=key, value=v))
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        if not isinstance(v, str):
            raise _unsupported(f, "text matching needs a string")
        # every word of the query must occur as a word of the field (case-insensitive)
        return models.FieldCondition(key=key, match=models.MatchText(text=v))
    if op == FilterOperator.IS_EMPTY:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
    raise _unsupported(f, f"supported operators are {SUPPORTED_OPERATORS}")


def server_filter(filters: Optional[MetadataFilters]) -> Optional[models.Filter]:
    """Translate (nested) LlamaIndex MetadataFilters into a qdrant-client `models.Filter`.

    Empty (nested) groups are skipped; returns None when nothing is left. Raises ValueError
    naming the operator for what Qdrant cannot express.
    """
    return translate(filters, condition, models.Filter)


def all_of(*parts: Optional[Any]) -> Optional[models.Filter]:
    """The conjunction of the conditions given (None ones skipped); None when there are none."""
    return conjunction(list(parts), models.Filter)
