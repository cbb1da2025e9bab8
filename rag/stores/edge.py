"""Embedded Qdrant: LlamaIndex's vector-store contract over ``qdrant_edge.EdgeShard``.

``qdrant-edge-py`` is the Qdrant engine itself running inside this process (HNSW,
payload indexes, filters, quantization, write-ahead log); ``QdrantClient(path=...)``
by contrast is a brute-force numpy store that pickles points into SQLite. This module
wraps one shard per directory and speaks LlamaIndex's ``BasePydanticVectorStore``.

Directory layout (``path``): see :mod:`rag.stores.edge_files` (lock, sidecar, shard).
Filters are translated by :mod:`rag.stores.edge_filters`; shard configuration, points and
query requests are built by :mod:`rag.stores.edge_shard`; LlamaIndex's hybrid, sparse and
MMR query modes by :mod:`rag.stores.edge_modes` (BM25 from the index's signal store).

Guarantees, as verified against qdrant-edge-py 0.9.0:

* Every update is appended to the shard's WAL (a memory-mapped file) before
  ``update`` returns, and the WAL is replayed on load: data written by ``add()``
  survives the process being killed (SIGKILL) right after ``add()`` returns.
  Surviving a power loss or kernel crash needs an fsync: pass
  ``flush_on_write=True`` (or call :meth:`flush`).
* One process (and one store object) per directory: see :mod:`rag.stores.edge_files`.
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
by :func:`rag.stores.payload.node_payload`. The store implements
:class:`rag.stores.base.Collection` (count, has_points, build_search_graph, unindexed).
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import qdrant_edge as qe
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from rag.errors import StorageError
from rag.stores.base import ThreadedAsync
from rag.stores import edge_files
from rag.stores.edge_files import META_FILE, SHARD_DIR
from rag.stores.edge_modes import EdgeQueryModes, as_result, check_mode, mmr_settings
from rag.stores.edge_filters import build_filter, document_filter, query_filter, selection_filter
from rag.stores.edge_shard import (
    DEFAULT_PAYLOAD_INDEXES,
    build_points,
    checked_options,
    ensure_payload_indexes,
    node_from_record,
    scroll_records,
    search_params,
    search_request,
    shard_config,
)
from rag.stores.payload import point_id_for

__all__ = ["QdrantEdgeVectorStore", "build_filter", "point_id_for", "UNINDEXED_WARNING"]

logger = logging.getLogger(__name__)

#: Unindexed points (scanned exactly by every query) at which a query logs a hint once.
UNINDEXED_WARNING = 50_000


class QdrantEdgeVectorStore(EdgeQueryModes, ThreadedAsync, BasePydanticVectorStore):
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
        signals: where hybrid and sparse queries read BM25 (see `use_signals`);
            by default the signal store an index keeps beside this collection.
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
    _signals: Any = PrivateAttr(default=None)  # a SignalStore, or a callable giving one
    _own_signals: Any = PrivateAttr(default=None)  # one this store opened (closed with it)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        quantization: Optional[str] = "int8",
        payload_indexes: Optional[Dict[str, str]] = None,
        signals: Any = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"QdrantEdgeVectorStore got unknown options: {', '.join(unknown)}")
        super().__init__(
            path=str(Path(path).expanduser().resolve()),
            quantization=quantization,
            payload_indexes=checked_options(quantization, payload_indexes),
            **options,
        )
        self._write_lock = threading.RLock()
        self._signals = signals
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

    def _acquire_dir_lock(self) -> None:
        self._lock_file = edge_files.acquire_lock(self.path)

    def _release_dir_lock(self) -> None:
        handle, self._lock_file = self._lock_file, None
        edge_files.release_lock(handle)

    def _open_existing(self) -> None:
        meta = edge_files.read_meta(self._meta_path)
        shard_exists = (self._shard_path / "edge_config.json").exists()
        if not shard_exists:
            return  # empty store: created on the first add
        dim = meta["dim"] if meta else edge_files.dim_from_engine_config(self._shard_path)
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
            edge_files.write_meta(self._meta_path, self._dim)
        ensure_payload_indexes(self._shard, self.payload_indexes)
        self._count_unindexed()

    def _engine_call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # the binding raises plain Exception; a Rust panic is a BaseException
            if "WouldBlock" in str(e):
                raise edge_files.in_use_error(self.path) from None
            raise edge_files.damaged_error(str(self._shard_path), f"cannot {what} it: {e}") from None

    def _read(self, fn: Any) -> Any:
        """Run a read of the shard; damaged files (an engine error, a payload that does not
        decode) become a StorageError naming the store and the fix."""
        try:
            return fn()
        except (KeyboardInterrupt, SystemExit, StorageError):
            raise
        except BaseException as e:
            raise edge_files.damaged_error(str(self._shard_path), f"a read failed: {e}") from None

    def _edge_config(self, dim: int) -> qe.EdgeConfig:
        return shard_config(
            dim,
            hnsw_m=self.hnsw_m,
            hnsw_ef_construct=self.hnsw_ef_construct,
            full_scan_threshold_kb=self.full_scan_threshold_kb,
            quantization=self.quantization,
            max_search_threads=self.max_search_threads,
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
        edge_files.write_meta(self._meta_path, dim)
        if self._shard_path.exists():  # leftovers of a crash before the first point
            shutil.rmtree(self._shard_path)
        self._shard = self._engine_call(
            "create", lambda: qe.EdgeShard.create(str(self._shard_path), self._edge_config(dim))
        )
        self._dim = dim
        ensure_payload_indexes(self._shard, self.payload_indexes)
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
                self._close_own_signals()
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

    def build_search_graph(self) -> bool:
        """`Collection`: build the HNSW graph over new points now (see :meth:`optimize`)."""
        return self.optimize()

    def has_points(self) -> bool:
        """`Collection`: any point stored? From segment statistics, without counting (µs)."""
        return self.stats()["points"] > 0

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

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Upsert nodes (with embeddings); returns their node ids."""
        if not nodes:
            return []
        points = build_points(nodes, flat_metadata=self.flat_metadata)
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
        self._delete_where(document_filter(ref_doc_id))

    def delete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id and/or metadata filter (both given: nodes matching both).

        With neither (or only empty filters) nothing is deleted; use ``clear()``.
        """
        flt = selection_filter(node_ids, filters)
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

    def get_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        limit: Optional[int] = None,
    ) -> List[BaseNode]:
        """Nodes (with embeddings) by id and/or filter, in point-id order; all if neither."""
        if node_ids is not None and len(node_ids) == 0:
            return []
        flt = selection_filter(node_ids, filters)
        shard = self._live_shard()
        if shard is None:
            return []
        return self._read(lambda: [node_from_record(r.payload, r.vector) for r in scroll_records(shard, flt, limit)])

    def ids_matching(self, point_ids: Sequence[str], filters: Optional[MetadataFilters]) -> set:
        """The ids among `point_ids` whose points match `filters`, reading no payload."""
        shard = self._live_shard()
        if shard is None or not point_ids:
            return set()
        flt = selection_filter(list(point_ids), filters)
        return self._read(lambda: {str(r.id) for r in scroll_records(shard, flt, len(point_ids), with_vector=False,
                                                                     with_payload=False)})

    def iter_nodes(self, page: int = 256) -> Iterator[List[BaseNode]]:
        """Every node (without its embedding), `page` at a time, in point-id order."""
        shard = self._live_shard()
        if shard is None:
            return
        records = scroll_records(shard, None, None, with_vector=False)
        while True:
            chunk = self._read(lambda: [node_from_record(r.payload) for r in itertools.islice(records, page)])
            if not chunk:
                return
            yield chunk

    def count(self, filters: Optional[MetadataFilters] = None) -> int:
        """Number of points (matching ``filters`` if given)."""
        shard = self._live_shard()
        if shard is None:
            return 0
        flt = build_filter(filters)
        return self._read(lambda: shard.count(qe.CountRequest(exact=True, filter=flt)))

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top-k nodes by the query's mode, as LlamaIndex's QdrantVectorStore runs them.

        ``default``: cosine similarity; ``hybrid``: dense and BM25 fused with ``alpha``
        (``sparse_top_k``, ``hybrid_top_k``); ``sparse``: BM25 alone; ``mmr``: maximal
        marginal relevance (``mmr_threshold``). Details: :mod:`rag.stores.edge_modes`.
        kwargs: ``exact`` (bool, overrides the store's), ``hnsw_ef`` (int),
        ``score_threshold`` (float); for mmr ``mmr_threshold``, ``mmr_prefetch_k``,
        ``mmr_prefetch_factor``.
        """
        check_mode(query.mode)
        if query.mode == VectorStoreQueryMode.SPARSE:
            return self._sparse_query(query)
        if query.query_embedding is None:
            raise ValueError("query.query_embedding is None: embed the query first.")
        mmr = mmr_settings(query, kwargs) if query.mode == VectorStoreQueryMode.MMR else None
        flt = query_filter(query)
        shard = self._live_shard()
        if shard is None or query.similarity_top_k <= 0:
            return as_result([])
        embedding = self._checked_embedding(query.query_embedding)
        if query.mode == VectorStoreQueryMode.HYBRID:
            return self._hybrid_query(query, embedding, flt, kwargs)
        engine_query = qe.Query.Nearest(embedding) if mmr is None else qe.Mmr(embedding, mmr[0], mmr[1])
        return as_result(self._scored_search(engine_query, query.similarity_top_k, flt, kwargs))

    def _checked_embedding(self, embedding: Sequence[float]) -> List[float]:
        """The query vector as a list, refused (ValueError) when its dimension is not the store's."""
        if not isinstance(embedding, list):
            embedding = list(embedding)
        if len(embedding) != self._dim:
            raise ValueError(
                f"Query embedding has dimension {len(embedding)}, but the store at "
                f"{self.path} holds {self._dim}-d vectors: embed the query with the "
                "model the store was built with."
            )
        return embedding

    def query_ids(self, embedding: Sequence[float], limit: int,
                  filters: Optional[MetadataFilters] = None) -> List[Tuple[str, float]]:
        """(point id, score) of the `limit` nearest points, best first, reading no payload.

        For a fused search's legs, which need only ids and scores: reading 20 payloads costs
        about ten times the search itself (docs/benchmarks.md). A point id is `point_id_for`
        of its node id, and the node id itself for the UUID ids `rag ingest` writes.
        """
        shard = self._live_shard()
        if shard is None or limit <= 0:
            return []
        points = self._engine_search(qe.Query.Nearest(self._checked_embedding(embedding)), limit,
                                     build_filter(filters), {}, with_payload=False)
        return [(str(p.id), float(p.score)) for p in points]

    def _engine_search(self, engine_query: Any, limit: int, flt: Optional[qe.Filter],
                       kwargs: Dict[str, Any], with_payload: bool = True) -> List[Any]:
        """The engine's scored points for one query on the dense vectors, best first."""
        exact = bool(kwargs.get("exact", self.exact))
        if not exact:
            self._hint_unindexed()
        params = search_params(exact=exact, hnsw_ef=kwargs.get("hnsw_ef", self.hnsw_ef),
                               quantization=self.quantization, oversampling=self.oversampling)
        request = search_request(engine_query, limit=limit, flt=flt, params=params,
                                 score_threshold=kwargs.get("score_threshold"), with_payload=with_payload)
        shard = self._live_shard()
        return self._read(lambda: shard.query(request))

    def _scored_search(self, engine_query: Any, limit: int, flt: Optional[qe.Filter],
                       kwargs: Dict[str, Any]) -> List[Any]:
        """(node, score) pairs of one engine query on the dense vectors, best first."""
        points = self._engine_search(engine_query, limit, flt, kwargs)
        return self._read(lambda: [(node_from_record(p.payload), p.score) for p in points])

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
