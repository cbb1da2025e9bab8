"""LlamaIndex's hybrid, sparse and MMR query modes on the embedded store: settings and arithmetic.

`QdrantEdgeVectorStore.query` runs the legs in the engine; this module holds what is decided
around them, as pure functions, with the semantics of llama-index-vector-stores-qdrant's
`QdrantVectorStore` (0.10):

* **hybrid**: a dense leg of ``similarity_top_k`` and a BM25 leg of ``sparse_top_k`` (default
  ``similarity_top_k``), both under the query's filters, fused by relative score fusion:
  each leg's scores are min-max scaled to [0, 1] and an item scores
  ``alpha * dense + (1 - alpha) * sparse`` (absent from a leg: 0 there); ``alpha`` defaults
  to 0.5 (1: dense only, 0: BM25 only); ``hybrid_top_k`` (default ``similarity_top_k``) items
  are kept. When one leg finds nothing, the other leg's results come back with their own
  scores. Two departures, both where the stock arithmetic is degenerate: a leg whose scores
  are all equal (one hit, say) scales to 1, not to its raw score (an unscaled BM25 score
  would outweigh everything); and ties go to the order of the heavier leg (the dense one at
  0.5), so that alpha = 1 gives exactly the dense order and alpha = 0 the BM25 order.
* **sparse**: the BM25 leg alone (``sparse_top_k``, default ``similarity_top_k``).
* **mmr**: the engine's maximal marginal relevance. Its ``lambda`` weighs relevance against
  diversity the way LlamaIndex's ``mmr_threshold`` does (1: relevance only, plain dense order;
  0: diversity first), so the threshold is passed through (default 0.5, LlamaIndex's). It is
  read from ``vector_store_kwargs={"mmr_threshold": ...}`` (how LlamaIndex's retriever passes
  it) or from ``VectorStoreQuery.mmr_threshold``. Candidates: ``mmr_prefetch_k``, or
  ``similarity_top_k * mmr_prefetch_factor`` (default 4), the names other LlamaIndex stores use.
  Similarities are the items' cosine similarity to the query, in MMR order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import qdrant_edge as qe
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode, VectorStoreQueryResult

from rag.errors import RagError, StorageError
from rag.stores.edge_filters import all_of, query_filter
from rag.stores.edge_shard import node_from_record
from rag.stores.payload import point_id_for
from rag.stores.signals import META_FILE as SIGNALS_META, SignalStore

DEFAULT_ALPHA = 0.5
DEFAULT_MMR_THRESHOLD = 0.5
DEFAULT_MMR_PREFETCH_FACTOR = 4.0
MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.SPARSE,
         VectorStoreQueryMode.MMR)

Ranked = Sequence[Tuple[Hashable, float]]  # one leg's results, best first


# -- fusion arithmetic -----------------------------------------------------------------------
def min_max(scores: Sequence[float]) -> List[float]:
    """Scores scaled to [0, 1] (lowest -> 0, highest -> 1); all equal -> all 1."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]


def relative_score_fusion(dense: Ranked, sparse: Ranked, alpha: float = DEFAULT_ALPHA,
                          limit: Optional[int] = None) -> List[Tuple[Hashable, float]]:
    """LlamaIndex's hybrid fusion: ``alpha * scaled dense + (1 - alpha) * scaled sparse``, best first.

    Ties go to the order of the heavier leg, then of the other (dense first at alpha 0.5).
    """
    check_alpha(alpha)
    legs = {"dense": (alpha, dense), "sparse": (1.0 - alpha, sparse)}
    fused: Dict[Hashable, float] = {}
    ranks: Dict[str, Dict[Hashable, int]] = {}
    for name, (weight, ranked) in legs.items():
        ranks[name] = {}
        ordered = sorted(ranked, key=lambda item: -item[1])  # stable: a leg's own order breaks ties
        for position, ((item_id, _), scaled) in enumerate(zip(ordered, min_max([s for _, s in ordered]))):
            if item_id in ranks[name]:
                continue
            ranks[name][item_id] = position
            fused[item_id] = fused.get(item_id, 0.0) + weight * scaled
    order = ["sparse", "dense"] if alpha < 0.5 else ["dense", "sparse"]
    missing = 1 << 30
    ranking = sorted(fused.items(), key=lambda kv: (-kv[1], *(ranks[n].get(kv[0], missing) for n in order)))
    return ranking[:limit] if limit is not None else ranking


# -- query settings --------------------------------------------------------------------------
def check_alpha(alpha: float) -> float:
    """`alpha` if it is a weight between 0 and 1, else ValueError."""
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be between 0 (BM25 only) and 1 (dense only), got {alpha!r}")
    return float(alpha)


def hybrid_limits(query: VectorStoreQuery) -> Tuple[int, int, int, float]:
    """(dense leg size, sparse leg size, results kept, alpha) of a hybrid query."""
    dense_k = query.similarity_top_k
    sparse_k = query.sparse_top_k or dense_k
    top_k = query.hybrid_top_k or dense_k
    alpha = check_alpha(query.alpha) if query.alpha is not None else DEFAULT_ALPHA
    return dense_k, sparse_k, top_k, alpha


def mmr_settings(query: VectorStoreQuery, kwargs: Mapping[str, Any]) -> Tuple[float, int]:
    """(the engine's MMR lambda, candidates) from a query and its ``vector_store_kwargs``."""
    threshold = kwargs.get("mmr_threshold")
    if threshold is None:
        threshold = query.mmr_threshold
    if threshold is None:
        threshold = DEFAULT_MMR_THRESHOLD
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"mmr_threshold must be between 0 (diversity first) and 1 (relevance only), "
                         f"got {threshold!r}")
    prefetch_k, factor = kwargs.get("mmr_prefetch_k"), kwargs.get("mmr_prefetch_factor")
    if prefetch_k is not None and factor is not None:
        raise ValueError("give mmr_prefetch_k or mmr_prefetch_factor, not both")
    top_k = query.similarity_top_k
    if prefetch_k is not None:
        if not isinstance(prefetch_k, int) or isinstance(prefetch_k, bool) or prefetch_k < 1:
            raise ValueError(f"mmr_prefetch_k must be a positive integer, got {prefetch_k!r}")
        candidates = prefetch_k
    else:
        factor = DEFAULT_MMR_PREFETCH_FACTOR if factor is None else factor
        if not (isinstance(factor, (int, float)) and factor >= 1):
            raise ValueError(f"mmr_prefetch_factor must be at least 1, got {factor!r}")
        candidates = math.ceil(top_k * factor)
    return float(threshold), max(candidates, top_k)


def check_mode(mode: VectorStoreQueryMode) -> None:
    """ValueError for the query modes the store does not run."""
    if mode not in MODES:
        supported = ", ".join(repr(m.value) for m in MODES)
        raise ValueError(f"QdrantEdgeVectorStore runs the query modes {supported}; got {mode.value!r}.")


# -- where the BM25 signals live -------------------------------------------------------------
def storage_of(store_path: str) -> Optional[Path]:
    """The rag storage folder of a store at ``<storage>/edge/<collection>``, else None."""
    path = Path(store_path)
    return path.parent.parent if path.parent.name == "edge" else None


def signal_path(store_path: str) -> Optional[Path]:
    """Where the index keeps this collection's signals: ``<storage>/signals/<collection>``."""
    storage = storage_of(store_path)
    return storage / "signals" / Path(store_path).name if storage is not None else None


def open_signal_store(path: Path) -> Optional[SignalStore]:
    """The signal store at `path` (its kind read from its settings file); None if there is none."""
    meta = path / SIGNALS_META
    if not meta.is_file():
        return None
    try:
        kind = json.loads(meta.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError) as exc:
        raise StorageError(f"{meta} cannot be read ({exc}); rebuild it with: rag migrate --signals") from None
    if kind not in ("text", "image"):
        raise StorageError(f"{meta} names no signal kind; rebuild it with: rag migrate --signals")
    return SignalStore(path, kind)


def missing_signals(store_path: str) -> RagError:
    """The error of a hybrid or sparse query on a store that has no BM25 signals."""
    storage = storage_of(store_path)
    if storage is None:
        return RagError(
            f"Hybrid and sparse queries need BM25 signals, and the store at {store_path} has none: it is not "
            "in a rag storage folder (<storage>/edge/<collection>, signals in <storage>/signals/<collection>) "
            "and none were given (QdrantEdgeVectorStore(path, signals=SignalStore(...)))."
        )
    return RagError(
        f"Hybrid and sparse queries need the BM25 signals of the index in {storage}, which was built before "
        f"them. Add them (no image is embedded again) with: rag migrate --signals --storage {storage}"
    )


# -- the legs, run by the store --------------------------------------------------------------
class EdgeQueryModes:
    """Hybrid, sparse and MMR queries of `QdrantEdgeVectorStore` (mixed into it).

    The store reads BM25 from the collection's signal store and never writes it (the index
    does). Which signal store: the one given with `use_signals` (the index hands over its
    own handle, as a shard may be open once per process), else the one at
    ``<storage>/signals/<collection>`` beside a store at ``<storage>/edge/<collection>``,
    opened on first use and closed with the store.
    """

    def use_signals(self, signals: Any) -> None:
        """Read BM25 from `signals`: a `SignalStore`, or a callable returning the current one."""
        with self._write_lock:  # type: ignore[attr-defined]
            self._close_own_signals()
            self._signals = signals

    def _close_own_signals(self) -> None:
        own, self._own_signals = self._own_signals, None  # type: ignore[attr-defined]
        if own is not None:
            own.close()

    def _signal_store(self) -> SignalStore:
        """The built signal store of this collection; RagError naming the fix when there is none."""
        store = self._signals() if callable(self._signals) else self._signals  # type: ignore[attr-defined]
        if store is None:
            with self._write_lock:  # type: ignore[attr-defined]
                if self._own_signals is None:  # type: ignore[attr-defined]
                    path = signal_path(self.path)  # type: ignore[attr-defined]
                    self._own_signals = open_signal_store(path) if path is not None else None
                store = self._own_signals  # type: ignore[attr-defined]
        if store is None or not store.exists():
            raise missing_signals(self.path)  # type: ignore[attr-defined]
        return store

    def _nodes_by_id(self, node_ids: Sequence[str], flt: Any) -> Dict[str, Any]:
        """node id -> node, for those of `node_ids` that the collection holds and `flt` admits."""
        if not node_ids:
            return {}
        wanted = all_of(qe.HasIdCondition({point_id_for(n) for n in node_ids}), flt)
        request = qe.ScrollRequest(limit=len(node_ids), filter=wanted, with_payload=True, with_vector=False)
        shard = self._live_shard()  # type: ignore[attr-defined]
        records, _ = self._read(lambda: shard.scroll(request))  # type: ignore[attr-defined]
        nodes = self._read(lambda: [node_from_record(r.payload) for r in records])  # type: ignore[attr-defined]
        return {node.node_id: node for node in nodes}

    def _sparse_leg(self, query: VectorStoreQuery, limit: int, flt: Any) -> List[Tuple[Any, float]]:
        """(node, BM25 score) best first: the signal store ranks (under the query's metadata filters),
        the collection confirms under the whole filter `flt` (ids included)."""
        text = query.query_str
        if not text or limit <= 0:
            return []
        by_ids = bool(query.doc_ids or query.node_ids)  # the signal store filters metadata only: look deeper
        found = self._signal_store().query(text=text, limit=limit * 4 if by_ids else limit,
                                           filters=query.filters).get("bm25", [])
        nodes = self._nodes_by_id([node_id for node_id, _ in found], flt)
        return [(nodes[node_id], score) for node_id, score in found if node_id in nodes][:limit]

    def _hybrid_query(self, query: VectorStoreQuery, embedding: List[float], flt: Any,
                      kwargs: Mapping[str, Any]) -> Any:
        dense_k, sparse_k, top_k, alpha = hybrid_limits(query)
        dense = self._scored_search(qe.Query.Nearest(embedding), dense_k, flt, kwargs)  # type: ignore[attr-defined]
        sparse = self._sparse_leg(query, sparse_k, flt)
        if not sparse or not dense:  # one leg found nothing: the other, with its own scores (as stock)
            return as_result((dense or sparse)[:top_k])
        nodes = {node.node_id: node for node, _ in sparse}
        nodes.update({node.node_id: node for node, _ in dense})
        fused = relative_score_fusion([(n.node_id, s) for n, s in dense], [(n.node_id, s) for n, s in sparse],
                                      alpha, top_k)
        return as_result([(nodes[node_id], score) for node_id, score in fused])

    def _sparse_query(self, query: VectorStoreQuery) -> Any:
        if not query.query_str:
            raise ValueError("query.query_str is empty: sparse mode ranks nodes by BM25 over the query's words.")
        flt = query_filter(query)
        if self._live_shard() is None or query.similarity_top_k <= 0:  # type: ignore[attr-defined]
            return as_result([])
        return as_result(self._sparse_leg(query, query.sparse_top_k or query.similarity_top_k, flt))


def as_result(scored: Sequence[Tuple[Any, float]]) -> VectorStoreQueryResult:
    """A VectorStoreQueryResult of (node, score) pairs, ids being node ids."""
    return VectorStoreQueryResult(nodes=[n for n, _ in scored], similarities=[float(s) for _, s in scored],
                                  ids=[n.node_id for n, _ in scored])
