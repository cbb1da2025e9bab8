"""What the index needs from a collection beyond LlamaIndex's vector-store contract.

Every backend (the embedded qdrant-edge store, qdrant-client's local folder mode, a Qdrant
server) implements `Collection`, so callers ask instead of probing with `hasattr`:

- `count()`: exact number of points (0 before the collection exists);
- `has_points()`: whether there is any point, answered without visiting every point;
- `build_search_graph()`: index new points in the search graph now (a no-op where the engine
  does it by itself or has no graph); True when anything was built;
- `unindexed()`: points outside the search graph, which every query scans exactly;
- `use_signals(signals)`: where LlamaIndex's hybrid and sparse query modes read BM25 (the
  index's signal store of this collection, or a callable returning it; a no-op where the
  backend has no such modes of ours).

Beside each collection, a `SignalIndex` keeps the lexical and caption signals of its points
(`rag.stores.signals.SignalStore` in qdrant-edge, `rag.stores.server_signals.ServerSignalStore`
on a Qdrant server); the index and the search use only the methods listed there.

`QdrantClientCollection` implements them once for the two qdrant-client backends;
`ThreadedAsync` gives an embedded store LlamaIndex's async API by running the sync calls in a
worker thread (the engine releases the GIL while it works).
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

from rag.stores.payload import point_id_for


@runtime_checkable
class Collection(Protocol):
    """A LlamaIndex vector store (add, delete, query, get_nodes) with the capabilities above."""

    def count(self) -> int:
        """Exact number of points."""

    def has_points(self) -> bool:
        """Whether any point is stored (cheap: no full count)."""

    def build_search_graph(self) -> bool:
        """Index new points in the search graph now; True when anything was built."""

    def unindexed(self) -> int:
        """Points the search graph does not hold yet (scanned exactly by every query)."""

    def use_signals(self, signals: Any) -> None:
        """Read BM25 for hybrid and sparse queries from `signals` (a SignalStore or a callable)."""

    def iter_nodes(self, page: int = 256) -> Iterator[List[Any]]:
        """Every node (without its embedding), `page` at a time: a whole collection in bounded memory."""


@runtime_checkable
class SignalIndex(Protocol):
    """The BM25 and image-word signals of one collection's points (see `rag.stores.signal_points`)."""

    kind: str  # "text" or "image"

    def exists(self) -> bool:
        """Has this store been built (possibly empty)?"""

    def ensure(self, words_dim: Optional[int] = None) -> None:
        """Create the empty store now if it does not exist (images need the text model's dimension)."""

    def drop(self) -> None:
        """Delete everything it holds; afterwards `exists()` is False."""

    def close(self) -> None:
        """Let go of the store; writes are refused afterwards."""

    def optimize(self) -> bool:
        """Index new points now where the engine waits to be asked; True when anything was built."""

    def add(self, items: Sequence[Any]) -> None:
        """Upsert the signals of these `SignalPoint`s."""

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Drop the signals of every node of these documents."""

    def count(self) -> int:
        """Exact number of points."""

    def query(self, text: str = "", words_vector: Optional[List[float]] = None, limit: int = 20,
              filters: Optional[Any] = None, point_ids: bool = False) -> Dict[str, List[Tuple[str, float]]]:
        """Legs ``bm25`` and (images) ``words``: (node id, score), best first; `filters` are `MetadataFilters`;
        `point_ids`: point ids instead, with no payload read."""

    def article_keys(self, node_ids: Sequence[str]) -> Dict[str, Optional[str]]:
        """node id -> article key (url, else title)."""

    def ids_of_articles(self, keys: Sequence[str], filters: Optional[Any] = None, limit: int = 100) -> Dict[str, str]:
        """node id -> article key of the points of these articles."""


class QdrantClientCollection:
    """`Collection` for LlamaIndex's `QdrantVectorStore` over a qdrant-client (local or server).

    Mixed in before `QdrantVectorStore`: it reads that class's `client` and `collection_name`.
    """

    client: Any
    collection_name: str

    def _exists(self) -> bool:
        return bool(self.client.collection_exists(self.collection_name))

    def count(self) -> int:
        """Exact number of points (0 before the first add creates the collection)."""
        if not self._exists():
            return 0
        return int(self.client.count(self.collection_name, exact=True).count)

    def has_points(self) -> bool:
        """Any point? The collection's own statistics answer without counting."""
        if not self._exists():
            return False
        return bool(self.client.get_collection(self.collection_name).points_count)

    def build_search_graph(self) -> bool:
        """Nothing to do: a server indexes in the background, local mode has no graph."""
        return False

    def unindexed(self) -> int:
        """0: nothing waits for a graph build we could start (see `build_search_graph`)."""
        return 0

    def use_signals(self, signals: Any) -> None:
        """Nothing to do: the stock store's hybrid mode has its own sparse vectors (enable_hybrid)."""

    def iter_nodes(self, page: int = 256) -> Iterator[List[Any]]:
        """Every node (without its embedding), `page` at a time, by qdrant-client's scroll."""
        if not self._exists():
            return
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection_name, limit=page, offset=offset,  # type: ignore[attr-defined]
                                                with_payload=True, with_vectors=False)
            if points:
                yield list(self.parse_to_query_result(points).nodes or [])  # type: ignore[attr-defined]
            if offset is None or not points:
                return

    def get_nodes(self, node_ids: Optional[List[str]] = None, filters: Any = None, limit: Optional[int] = None,
                  **kwargs: Any) -> List[Any]:
        """The stock read, except that ids and filters together give the points matching both: the
        stock store adds the ids to the filter's `should`, so an OR filter let any of the ids in."""
        if node_ids is None or filters is None or kwargs:
            return super().get_nodes(node_ids=node_ids, filters=filters, limit=limit, **kwargs)  # type: ignore[misc]
        points = self._select(node_ids, filters, limit, with_payload=True)
        return list(self.parse_to_query_result(points).nodes or []) if points else []  # type: ignore[attr-defined]

    def ids_matching(self, point_ids: Sequence[str], filters: Any) -> set:
        """The ids among `point_ids` whose points match `filters`, reading no payload."""
        return {str(p.id) for p in self._select(point_ids, filters, None, with_payload=False)}

    def _select(self, node_ids: Sequence[str], filters: Any, limit: Optional[int], with_payload: bool) -> List[Any]:
        if not node_ids or not self._exists():
            return []
        from qdrant_client import models

        ids = [point_id_for(n) for n in node_ids]
        selection = models.Filter(must=[models.HasIdCondition(has_id=ids), self._build_subfilter(filters)])  # type: ignore[attr-defined]
        points, _ = self.client.scroll(self.collection_name, scroll_filter=selection,  # type: ignore[attr-defined]
                                       limit=min(len(ids), limit or len(ids)), with_payload=with_payload,
                                       with_vectors=with_payload)
        return points

    def _query_filter(self, vector: List[float], limit: int, filters: Any) -> Any:
        """LlamaIndex `MetadataFilters` as this store's qdrant-client filter (the stock store's own rules)."""
        from llama_index.core.vector_stores.types import VectorStoreQuery

        return self._build_query_filter(VectorStoreQuery(query_embedding=vector, similarity_top_k=limit,  # type: ignore[attr-defined]
                                                         filters=filters))

    def _vector_name(self) -> Any:
        """The dense vector's name, after the stock store has looked whether the collection is
        in its legacy (unnamed vector) format, as its own `query` does first."""
        if getattr(self, "_legacy_vector_format", False) is None:
            self._detect_vector_format(self.collection_name)  # type: ignore[attr-defined]
        return self.dense_vector_name  # type: ignore[attr-defined]

    def query_ids(self, vector: List[float], limit: int, filters: Any = None) -> List[Tuple[str, float]]:
        """(point id, score) of the `limit` nearest points, best first, reading no payload
        (as `QdrantEdgeVectorStore.query_ids`)."""
        if limit <= 0 or not self._exists():
            return []
        response = self.client.query_points(self.collection_name, query=[float(x) for x in vector], limit=limit,
                                            query_filter=self._query_filter(vector, limit, filters),
                                            using=self._vector_name(), with_payload=False)
        return [(str(p.id), float(p.score)) for p in response.points]

    def mmr_query(self, vector: List[float], limit: int, filters: Any, lambda_: float) -> Tuple[list, list]:
        """(nodes, scores) by the engine's maximal marginal relevance, through qdrant-client's Query API.

        `lambda_` weighs relevance against diversity as qdrant-edge's `Mmr` does (the Query API's
        `diversity` is 1 - lambda); candidates as in `rag.search.hybrid.edge_mmr_query`.
        """
        from qdrant_client import models

        if limit <= 0 or not self._exists():
            return [], []
        query = models.NearestQuery(nearest=[float(x) for x in vector],
                                    mmr=models.Mmr(diversity=1.0 - lambda_, candidates_limit=max(limit * 4, 50)))
        response = self.client.query_points(self.collection_name, query=query, limit=limit,
                                            query_filter=self._query_filter(vector, limit, filters),
                                            using=self._vector_name())
        result = self.parse_to_query_result(response.points)  # type: ignore[attr-defined]
        return list(result.nodes or []), list(result.similarities or [])


class ThreadedAsync:
    """LlamaIndex's async vector-store methods as the sync ones run in a worker thread.

    For stores without an async client: qdrant-edge, and qdrant-client's local folder mode
    (where the stock store refuses async calls without an `AsyncQdrantClient`: stock defect 7).
    """

    async def async_add(self, nodes: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.add, nodes, **kwargs)  # type: ignore[attr-defined]

    async def aquery(self, query: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.query, query, **kwargs)  # type: ignore[attr-defined]

    async def aget_nodes(self, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.get_nodes, *args, **kwargs)  # type: ignore[attr-defined]

    async def adelete(self, ref_doc_id: str, **kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **kwargs)  # type: ignore[attr-defined]

    async def adelete_nodes(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self.delete_nodes, *args, **kwargs)  # type: ignore[attr-defined]

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)  # type: ignore[attr-defined]
