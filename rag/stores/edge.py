"""Embedded Qdrant: LlamaIndex's vector-store contract over ``qdrant_edge.EdgeShard``.

``qdrant-edge-py`` is the Qdrant engine itself running inside this process (HNSW,
payload indexes, filters, quantization, write-ahead log); ``QdrantClient(path=...)``
by contrast is a brute-force numpy store that pickles points into SQLite. This module
wraps one shard per directory and speaks LlamaIndex's ``BasePydanticVectorStore``.

Directory layout (``path``)::

    .lock            flock()ed while a store object has the directory open; holds its pid
    rag_store.json   sidecar written by this module: format version, dimension, distance
    shard/           the qdrant-edge shard (wal/, segments/, edge_config.json)

Guarantees, as verified against qdrant-edge-py 0.9.0:

* Every update is appended to the shard's WAL (a memory-mapped file) before
  ``update`` returns, and the WAL is replayed on load: data written by ``add()``
  survives the process being killed (SIGKILL) right after ``add()`` returns.
  Surviving a power loss or kernel crash needs an fsync: pass
  ``flush_on_write=True`` (or call :meth:`flush`).
* The engine itself takes a non-blocking lock on the WAL directory, so a second
  opener fails with an opaque ``Can't init WAL: Kind(WouldBlock)``. This module
  takes its own ``flock`` on ``.lock`` first (which also covers the time before the
  shard exists) and turns both into a :class:`rag.errors.StorageError` naming the
  directory and the holder's pid.
* The engine has no background optimizer: points land in a plain segment that
  is searched exhaustively, and only ``EdgeShard.optimize()`` builds the HNSW
  graph. ``optimize()`` holds the GIL for the whole build (a Python thread
  running it stalls every other thread), so it cannot run in the background.
  By default ``add()`` never builds: call :meth:`QdrantEdgeVectorStore.optimize`
  once after a bulk load (``rag ingest`` and ``rag migrate`` do), which also
  costs less in total than rebuilding as points arrive. With ``index_threshold``
  set, the ``add()`` that leaves that many points unindexed builds the graph
  itself. Queries are correct either way: unindexed points are scanned exactly,
  and a warning is logged once when that tail reaches ``UNINDEXED_WARNING``.
* With ``quantization="int8"`` (the default) the graph is built and searched on
  int8 codes, then the top ``oversampling`` x k candidates are rescored with the
  original float vectors: about 3.5x faster index builds and queries than float
  HNSW at the same recall (measured: docs/benchmarks.md).

Payloads have the stock ``QdrantVectorStore`` layout (``_node_content``, ``_node_type``,
``doc_id``, ``document_id``, ``ref_doc_id`` and the node's metadata at top level), built
by :func:`rag.stores.payload.node_payload`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import qdrant_edge as qe
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from rag.errors import StorageError
from rag.stores.payload import node_payload, point_id_for

try:  # POSIX only; on other systems the engine's own WAL lock still applies.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

STORE_FORMAT = 1
META_FILE = "rag_store.json"
LOCK_FILE = ".lock"
SHARD_DIR = "shard"

DOC_ID_KEY = "doc_id"  # same key the stock QdrantVectorStore filters on
ORIGINAL_ID_KEY = "_node_id"  # written only when the node id is not a UUID

DEFAULT_PAYLOAD_INDEXES: Dict[str, str] = {
    "doc_id": "keyword",
    "ref_doc_id": "keyword",
    "file_path": "keyword",
    "title": "keyword",
    "modality": "keyword",
}

_SCHEMA_TYPES = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "text": qe.PayloadSchemaType.Text,
    "datetime": qe.PayloadSchemaType.Datetime,
    "uuid": qe.PayloadSchemaType.Uuid,
    "geo": qe.PayloadSchemaType.Geo,
}

_SCROLL_PAGE = 1024

#: Unindexed points (scanned exactly by every query) at which a query logs a hint once.
UNINDEXED_WARNING = 50_000


# --------------------------------------------------------------------------- ids


# ----------------------------------------------------------------------- filters

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
    if filters is None:
        return None
    conditions: List[Any] = []
    for sub in filters.filters:
        if isinstance(sub, MetadataFilters):
            nested = build_filter(sub)
            if nested is not None:
                conditions.append(nested)
        else:
            conditions.append(_condition(sub))
    if not conditions:
        return None
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return qe.Filter(must=conditions)
    if condition == FilterCondition.OR:
        return qe.Filter(should=conditions)
    if condition == FilterCondition.NOT:
        return qe.Filter(must_not=conditions)
    raise ValueError(f"Unknown filter condition {condition!r}; expected and, or, not")


def _and(*parts: Optional[Any]) -> Optional[qe.Filter]:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    if len(present) == 1 and isinstance(present[0], qe.Filter):
        return present[0]
    return qe.Filter(must=present)


# -------------------------------------------------------------------- the store


class QdrantEdgeVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store on an embedded Qdrant shard in ``path``.

    The shard is created on the first ``add`` with that embedding's dimension and
    cosine distance; opening an existing directory reads the dimension back from
    its sidecar. One store object per directory at a time, across processes.

    Args:
        path: directory of the store (created if missing).
        hnsw_m, hnsw_ef_construct: HNSW graph parameters (build time).
        hnsw_ef: HNSW beam width at search time (``None``: engine default).
        full_scan_threshold_kb: below this many KB of vectors matching a filter,
            the engine scans them exactly instead of walking the graph.
        quantization: ``"int8"`` (scalar quantization; candidates are rescored
            with the float vectors) or ``None`` (float HNSW).
        oversampling: with quantization, rescore this many times k candidates.
        exact: exact (brute-force) search for every query; per query, pass
            ``exact=True`` to ``query``.
        payload_indexes: payload field -> index type (keyword, integer, float,
            bool, text, datetime, uuid, geo). Defaults to keyword indexes on
            doc_id, ref_doc_id, file_path, title and modality.
        index_threshold: the ``add`` that leaves this many points unindexed
            builds the HNSW graph for them (blocking). ``None`` (default): only
            :meth:`optimize` builds it.
        flush_on_write: fsync after every write (survives power loss, not just a
            killed process; slower).
        batch_size: points per engine update within one ``add``.
        max_search_threads: engine search threads (``None``: one per CPU).
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    flat_metadata: bool = False

    path: str
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    hnsw_ef: Optional[int] = 128
    full_scan_threshold_kb: int = 10_000
    quantization: Optional[str] = "int8"
    oversampling: float = 2.0
    exact: bool = False
    payload_indexes: Dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PAYLOAD_INDEXES)
    )
    index_threshold: Optional[int] = None
    flush_on_write: bool = False
    batch_size: int = 256
    max_search_threads: Optional[int] = None

    _shard: Any = PrivateAttr(default=None)
    _dim: Optional[int] = PrivateAttr(default=None)
    _lock_file: Any = PrivateAttr(default=None)
    _write_lock: Any = PrivateAttr(default=None)
    _index_skip_until: int = PrivateAttr(default=0)
    _unindexed: int = PrivateAttr(default=0)
    _warned_unindexed: bool = PrivateAttr(default=False)
    _closed: bool = PrivateAttr(default=False)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        hnsw_ef: Optional[int] = 128,
        full_scan_threshold_kb: int = 10_000,
        quantization: Optional[str] = "int8",
        oversampling: float = 2.0,
        exact: bool = False,
        payload_indexes: Optional[Dict[str, str]] = None,
        index_threshold: Optional[int] = None,
        flush_on_write: bool = False,
        batch_size: int = 256,
        max_search_threads: Optional[int] = None,
    ) -> None:
        if quantization not in (None, "int8"):
            raise ValueError(
                f"quantization={quantization!r} is not supported; expected None or 'int8'"
            )
        indexes = dict(DEFAULT_PAYLOAD_INDEXES if payload_indexes is None else payload_indexes)
        for field, kind in indexes.items():
            if kind not in _SCHEMA_TYPES:
                raise ValueError(
                    f"payload_indexes[{field!r}] = {kind!r} is not an index type; "
                    f"expected one of {', '.join(_SCHEMA_TYPES)}"
                )
        super().__init__(
            path=str(Path(path).expanduser().resolve()),
            hnsw_m=hnsw_m,
            hnsw_ef_construct=hnsw_ef_construct,
            hnsw_ef=hnsw_ef,
            full_scan_threshold_kb=full_scan_threshold_kb,
            quantization=quantization,
            oversampling=oversampling,
            exact=exact,
            payload_indexes=indexes,
            index_threshold=index_threshold,
            flush_on_write=flush_on_write,
            batch_size=batch_size,
            max_search_threads=max_search_threads,
        )
        self._write_lock = threading.RLock()
        Path(self.path).mkdir(parents=True, exist_ok=True)
        self._acquire_dir_lock()
        try:
            self._open_existing()
        except BaseException:
            self._release_dir_lock()
            raise

    @classmethod
    def class_name(cls) -> str:
        return "QdrantEdgeVectorStore"

    # ----------------------------------------------------------- lifecycle

    @property
    def client(self) -> Any:
        """The underlying ``qdrant_edge.EdgeShard`` (None until the first add)."""
        return self._shard

    @property
    def dim(self) -> Optional[int]:
        """Vector dimension, or None while the store is empty and new."""
        return self._dim

    @property
    def _shard_path(self) -> Path:
        return Path(self.path) / SHARD_DIR

    @property
    def _meta_path(self) -> Path:
        return Path(self.path) / META_FILE

    def _in_use_error(self, holder: str) -> StorageError:
        return StorageError(
            f"The vector store at {self.path} is in use by another process{holder}. "
            "qdrant-edge allows one process at a time per directory: close the other "
            "process (or the other store object open on this directory) and retry, "
            "or use a different directory."
        )

    def _acquire_dir_lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        lock_path = Path(self.path) / LOCK_FILE
        fh = open(lock_path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            pid = fh.read().strip()
            fh.close()
            if pid == str(os.getpid()):
                raise StorageError(
                    f"The vector store at {self.path} is already open in this process "
                    f"(pid {pid}) by another store object; another process or object may "
                    "not use it at the same time. Reuse that object or close() it first."
                ) from None
            raise self._in_use_error(f" (pid {pid})" if pid else "") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_file = fh

    def _release_dir_lock(self) -> None:
        fh, self._lock_file = self._lock_file, None
        if fh is not None:
            try:
                fh.seek(0)
                fh.truncate()
                fh.flush()
            except OSError:  # pragma: no cover
                pass
            fh.close()  # closing the descriptor drops the flock

    def _read_meta(self) -> Optional[dict]:
        try:
            meta = json.loads(self._meta_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StorageError(
                f"Cannot read {self._meta_path}: {e}. The store directory is damaged; "
                "rebuild the index into a fresh directory."
            ) from None
        if meta.get("format") != STORE_FORMAT:
            raise StorageError(
                f"{self._meta_path} has store format {meta.get('format')!r}; this version "
                f"reads format {STORE_FORMAT}. Rebuild the index or upgrade rag."
            )
        return meta

    def _write_meta(self, dim: int) -> None:
        meta = {
            "format": STORE_FORMAT,
            "engine": "qdrant-edge",
            "dim": dim,
            "distance": "cosine",
        }
        tmp = self._meta_path.with_suffix(".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(meta, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._meta_path)

    def _dim_from_engine_config(self) -> Optional[int]:
        try:
            cfg = json.loads((self._shard_path / "edge_config.json").read_text())
            return int(cfg["vectors"][""]["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _open_existing(self) -> None:
        meta = self._read_meta()
        shard_exists = (self._shard_path / "edge_config.json").exists()
        if not shard_exists:
            return  # empty store: created on the first add
        dim = meta["dim"] if meta else self._dim_from_engine_config()
        if dim is None:
            raise StorageError(
                f"{self.path} holds a Qdrant Edge shard whose vector dimension cannot be "
                f"read ({META_FILE} and shard/edge_config.json are missing or damaged)."
            )
        self._dim = int(dim)
        self._shard = self._engine_call(
            "open", lambda: qe.EdgeShard.load(str(self._shard_path), self._edge_config(self._dim))
        )
        if meta is None:
            self._write_meta(self._dim)
        self._ensure_payload_indexes()
        self._count_unindexed()

    def _engine_call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as e:  # the binding raises plain Exception
            if "WouldBlock" in str(e):
                raise self._in_use_error("") from None
            raise StorageError(
                f"Cannot {what} the Qdrant Edge shard at {self._shard_path}: {e}"
            ) from e

    def _edge_config(self, dim: int) -> qe.EdgeConfig:
        quant = None
        if self.quantization == "int8":
            quant = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99)
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(
                m=self.hnsw_m,
                ef_construct=self.hnsw_ef_construct,
                full_scan_threshold=self.full_scan_threshold_kb,
            ),
            quantization_config=quant,
            # The engine only optimizes when asked; when it is asked (by _maybe_index or
            # optimize()), every unindexed segment should get its graph: 1 KB threshold.
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
            max_search_threads=self.max_search_threads,
        )

    def _ensure_payload_indexes(self) -> None:
        existing = self._shard.info().payload_schema
        for field, kind in self.payload_indexes.items():
            if field not in existing:
                self._shard.update(
                    qe.UpdateOperation.create_field_index(field, _SCHEMA_TYPES[kind])
                )

    def _ensure_shard(self, dim: int) -> Any:
        """The open shard, created with ``dim`` if the store is new."""
        if self._closed:
            raise StorageError(f"The vector store at {self.path} is closed.")
        if self._shard is not None:
            if dim != self._dim:
                raise ValueError(
                    f"Embedding has dimension {dim}, but the store at {self.path} holds "
                    f"{self._dim}-d vectors. Use the same embedding model as when the "
                    "store was built, or a different directory (or clear() it)."
                )
            return self._shard
        self._write_meta(dim)
        if self._shard_path.exists():  # leftovers of a crash before the first point
            shutil.rmtree(self._shard_path)
        self._shard = self._engine_call(
            "create", lambda: qe.EdgeShard.create(str(self._shard_path), self._edge_config(dim))
        )
        self._dim = dim
        self._ensure_payload_indexes()
        return self._shard

    def _live_shard(self) -> Any:
        """The shard for reads; None when the store is still empty."""
        if self._closed:
            raise StorageError(f"The vector store at {self.path} is closed.")
        return self._shard

    def flush(self) -> None:
        """fsync the WAL and segments (durable against power loss, not just kills)."""
        shard = self._live_shard()
        if shard is not None:
            shard.flush()

    def persist(self, persist_path: str = "", fs: Any = None) -> None:
        """Called by ``StorageContext.persist``: data already lives in ``path``; flush it."""
        if not self._closed:
            self.flush()

    def close(self) -> None:
        """Flush, close the shard and release the directory lock (idempotent)."""
        with self._write_lock:
            if self._closed:
                return
            try:
                if self._shard is not None:
                    self._shard.flush()
                    self._shard.close()
            finally:
                self._shard = None
                self._closed = True
                self._release_dir_lock()

    def __enter__(self) -> "QdrantEdgeVectorStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ indexing

    def optimize(self) -> bool:
        """Build the HNSW graph over every point now, and merge/vacuum segments (blocking).

        Call it once after a bulk load: until then, the points added since the last
        build are searched exhaustively. Returns True when the engine did any work.
        """
        with self._write_lock:
            shard = self._live_shard()
            if shard is None:
                return False
            worked = bool(shard.optimize())
            self._count_unindexed()
            return worked

    def _count_unindexed(self) -> int:
        """Refresh (and return) the number of points outside the HNSW graph."""
        info = self._shard.info()
        self._unindexed = max(0, info.points_count - info.indexed_vectors_count)
        return self._unindexed

    def unindexed(self) -> int:
        """Points not in the HNSW graph yet (every query scans them exactly)."""
        return 0 if self._live_shard() is None else self._count_unindexed()

    def stats(self) -> Dict[str, int]:
        """Points, indexed vectors and segments, as the engine reports them."""
        shard = self._live_shard()
        if shard is None:
            return {"points": 0, "indexed_vectors": 0, "segments": 0}
        info = shard.info()
        return {
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "segments": info.segments_count,
        }

    def _maybe_index(self) -> None:
        """Build the graph once ``index_threshold`` points are unindexed (caller holds the lock)."""
        if self.index_threshold is None or self._shard is None:
            return
        info = self._shard.info()
        unindexed = info.points_count - info.indexed_vectors_count
        if unindexed < self.index_threshold or info.points_count < self._index_skip_until:
            return
        if not self._shard.optimize():  # nothing the engine wanted to do: do not retry each add
            self._index_skip_until = info.points_count + self.index_threshold
        self._count_unindexed()

    # --------------------------------------------------------------- writes

    def _build_points(self, nodes: Sequence[BaseNode]) -> List[qe.Point]:
        """Nodes as engine points (pure: no I/O). Payloads match the stock store's."""
        points = []
        for node in nodes:
            embedding = node.embedding
            if embedding is None:
                raise ValueError(
                    f"Node {node.node_id!r} has no embedding; embed nodes before adding "
                    "them to the vector store (or add them through an index)."
                )
            if not isinstance(embedding, list):
                embedding = list(embedding.tolist() if hasattr(embedding, "tolist") else embedding)
            payload = node_payload(node, flat_metadata=self.flat_metadata)
            pid = point_id_for(node.node_id)
            if pid != node.node_id:
                payload[ORIGINAL_ID_KEY] = node.node_id
            points.append(qe.Point(pid, embedding, payload))
        return points

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Upsert nodes (with embeddings); returns their node ids."""
        if not nodes:
            return []
        points = self._build_points(nodes)
        dims = {len(n.embedding) for n in nodes}  # type: ignore[arg-type]
        if len(dims) != 1:
            raise ValueError(
                f"Nodes in one add() have embeddings of different sizes {sorted(dims)}; "
                "a store holds one embedding model's vectors."
            )
        with self._write_lock:
            shard = self._ensure_shard(dims.pop())
            for i in range(0, len(points), self.batch_size):
                batch = points[i : i + self.batch_size]
                shard.update(qe.UpdateOperation.upsert_points(batch))
            self._unindexed += len(points)  # an upper bound (upserts may replace points)
            if self.flush_on_write:
                shard.flush()
            self._maybe_index()
        return [n.node_id for n in nodes]

    def _delete_where(self, flt: qe.Filter) -> None:
        with self._write_lock:
            shard = self._live_shard()
            if shard is None:
                return
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
            if self.flush_on_write:
                shard.flush()

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        self._delete_where(
            qe.Filter(must=[qe.FieldCondition(DOC_ID_KEY, match=qe.MatchValue(ref_doc_id))])
        )

    def delete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id and/or metadata filter (both given: nodes matching both).

        With neither (or only empty filters) nothing is deleted; use ``clear()``.
        """
        flt = self._selection(node_ids, filters)
        if flt is not None:
            self._delete_where(flt)

    def clear(self) -> None:
        """Delete all points and the shard; the next add may use another dimension."""
        with self._write_lock:
            if self._closed:
                raise StorageError(f"The vector store at {self.path} is closed.")
            if self._shard is not None:
                self._shard.close()
                self._shard = None
            shutil.rmtree(self._shard_path, ignore_errors=True)
            self._meta_path.unlink(missing_ok=True)
            self._dim = None
            self._index_skip_until = 0
            self._unindexed = 0

    # ---------------------------------------------------------------- reads

    @staticmethod
    def _selection(
        node_ids: Optional[List[str]], filters: Optional[MetadataFilters]
    ) -> Optional[qe.Filter]:
        has_id = None
        if node_ids is not None:
            has_id = qe.HasIdCondition({point_id_for(i) for i in node_ids})
        return _and(has_id, build_filter(filters))

    def _query_filter(self, query: VectorStoreQuery) -> Optional[qe.Filter]:
        doc_cond = None
        if query.doc_ids:
            doc_cond = qe.FieldCondition(DOC_ID_KEY, match=qe.MatchAny(list(query.doc_ids)))
        id_cond = None
        if query.node_ids:
            id_cond = qe.HasIdCondition({point_id_for(i) for i in query.node_ids})
        return _and(doc_cond, id_cond, build_filter(query.filters))

    @staticmethod
    def _to_node(payload: dict, vector: Any = None) -> BaseNode:
        node = metadata_dict_to_node(payload)
        if vector is not None and node.embedding is None:
            node.embedding = list(vector) if not isinstance(vector, dict) else vector.get("")
        return node

    def _scroll(self, flt: Optional[qe.Filter], limit: Optional[int]) -> Iterator[Any]:
        shard = self._live_shard()
        if shard is None:
            return
        offset = None
        left = limit
        while left is None or left > 0:
            page = _SCROLL_PAGE if left is None else min(_SCROLL_PAGE, left)
            records, offset = shard.scroll(
                qe.ScrollRequest(
                    offset=offset, limit=page, filter=flt, with_payload=True, with_vector=True
                )
            )
            yield from records
            if left is not None:
                left -= len(records)
            if offset is None or not records:
                return

    def get_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        limit: Optional[int] = None,
    ) -> List[BaseNode]:
        """Nodes (with embeddings) by id and/or filter, in point-id order; all if neither."""
        if node_ids is not None and len(node_ids) == 0:
            return []
        flt = self._selection(node_ids, filters)
        return [self._to_node(r.payload, r.vector) for r in self._scroll(flt, limit)]

    def count(self, filters: Optional[MetadataFilters] = None) -> int:
        """Number of points (matching ``filters`` if given)."""
        shard = self._live_shard()
        if shard is None:
            return 0
        return shard.count(qe.CountRequest(exact=True, filter=build_filter(filters)))

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top-k nearest nodes by cosine similarity.

        kwargs: ``exact`` (bool, overrides the store's), ``hnsw_ef`` (int),
        ``score_threshold`` (float).
        """
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(
                f"QdrantEdgeVectorStore supports dense (default) queries only, got mode "
                f"{query.mode.value!r}."
            )
        if query.query_embedding is None:
            raise ValueError("query.query_embedding is None: embed the query first.")
        flt = self._query_filter(query)
        shard = self._live_shard()
        if shard is None or query.similarity_top_k <= 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        embedding = query.query_embedding
        if not isinstance(embedding, list):
            embedding = list(embedding)
        if len(embedding) != self._dim:
            raise ValueError(
                f"Query embedding has dimension {len(embedding)}, but the store at "
                f"{self.path} holds {self._dim}-d vectors: embed the query with the "
                "model the store was built with."
            )
        exact = bool(kwargs.get("exact", self.exact))
        if not exact:
            self._hint_unindexed()
        quant = None
        if self.quantization is not None:
            quant = (
                qe.QuantizationSearchParams(ignore=True)
                if exact
                else qe.QuantizationSearchParams(rescore=True, oversampling=self.oversampling)
            )
        params = qe.SearchParams(
            hnsw_ef=kwargs.get("hnsw_ef", self.hnsw_ef), exact=exact, quantization=quant
        )
        points = shard.query(
            qe.QueryRequest(
                limit=query.similarity_top_k,
                query=qe.Query.Nearest(embedding),
                filter=flt,
                with_payload=True,
                with_vector=False,
                params=params,
                score_threshold=kwargs.get("score_threshold"),
            )
        )
        nodes = [self._to_node(p.payload) for p in points]
        return VectorStoreQueryResult(
            nodes=nodes,
            similarities=[p.score for p in points],
            ids=[n.node_id for n in nodes],
        )

    def _hint_unindexed(self) -> None:
        """Log once when a large unindexed tail makes every query scan it."""
        if self._warned_unindexed or self._unindexed < UNINDEXED_WARNING:
            return
        if self._count_unindexed() >= UNINDEXED_WARNING:
            self._warned_unindexed = True
            logger.warning(
                "%d points of the vector store at %s are not in its HNSW graph yet, so "
                "every query scans them exactly; call optimize() once after bulk loads "
                "(rag ingest does at the end of every run).",
                self._unindexed, self.path,
            )

    # ---------------------------------------------------------------- async

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aget_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        limit: Optional[int] = None,
    ) -> List[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters, limit)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aquery(
        self, query: VectorStoreQuery, **kwargs: Any
    ) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)
