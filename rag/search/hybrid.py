"""One search over passages and images: every signal's leg, fused into one explained list.

For a text query: passages by ``dense`` and ``bm25``; images by ``clip`` (CLIP's text tower),
``words`` and ``words_bm25`` (the image's own words) and ``article`` (images of the articles
whose passages rank best). For an image query: images by ``clip_image`` (the picture), and
passages by ``article`` (passages of the articles of the best images). Both: all of these. Each modality's legs are fused,
then the two rankings into one list (`rag.search.signals`); every hit carries the rank and
score it had in each leg that found it.

The legs run in the Qdrant engine (the dense collections, and the signal stores beside them);
the fusion runs here, because a hit's explanation needs each leg's own ranks and scores, and
because the weighted score fusion that measured best has no engine counterpart. The engine's
own `Fusion.Rrf` gives the same numbers as `rag.search.fusion.rrf` (tests/test_fusion.py).

The legs carry Qdrant point ids and scores only, and read no payload: reading a point's payload
costs more than finding it (20 payloads ~14 ms, the search ~1.2 ms at 100k points,
docs/benchmarks.md). Only the final hits are read, once. A point id is `point_id_for` of its
node id (the node id itself for the UUID ids `rag ingest` writes).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery

from rag.corpus.words import article_key
from rag.errors import RagError
from rag.search.fusion import Fused
from rag.search.signals import FusionSettings, article_ranking, fuse_all, fuse_modality
from rag.stores.payload import point_id_for
from rag.types import Hit

Leg = List[Tuple[str, float]]


def candidates_for(top_k: int, image_top_k: int) -> int:
    """How deep each leg looks: enough for fusion to find items that no single leg ranks high."""
    return max(20, 2 * max(top_k, image_top_k))


def _edge_filter(filters: Optional[MetadataFilters]) -> Any:
    if filters is None:
        return None
    from rag.stores.edge_filters import build_filter

    return build_filter(filters)


class HybridSearch:
    """The fused search over an index's two collections and their signal stores.

    `dense_query(kind, vector, limit, filters, nodes)` returns a collection's leg, (point id,
    score) best first, and may put nodes it read into `nodes` (point id -> node).
    `get_nodes(kind, point_ids)` fetches nodes by id. `matching(kind, point_ids, filters)` gives
    the set of those ids whose points match the filters (no payload). `signals` maps kind -> a signal store
    (`rag.stores.base.SignalIndex`, embedded or on a server: each turns the filters into its
    engine's own; a store that does not exist yet contributes no leg).
    """

    def __init__(self, dense_query: Any, get_nodes: Any, signals: Dict[str, Any], mmr_query: Any = None,
                 matching: Any = None) -> None:
        self.dense_query = dense_query
        self.get_nodes = get_nodes
        self.signals = signals
        self.mmr_query = mmr_query
        self.matching = matching

    def has_signals(self) -> bool:
        """Were the lexical and caption signals built for this index?"""
        return all(store.exists() for store in self.signals.values())

    # -- legs ----------------------------------------------------------------------------
    def _dense(self, kind: str, vector: List[float], limit: int, filters: Any, nodes: Dict[str, Any],
               mmr: Optional[float] = None) -> Leg:
        if mmr is None or self.mmr_query is None:
            return self.dense_query(kind, vector, limit, filters, nodes)
        found, scores = self.mmr_query(kind, vector, limit, filters, mmr)
        return leg_of_nodes(found, scores, nodes)

    def text_legs(self, query: str, vector: Optional[List[float]], settings: FusionSettings, limit: int,
                  filters: Optional[MetadataFilters], nodes: Dict[str, Any]) -> Dict[str, Leg]:
        legs: Dict[str, Leg] = {}
        if vector is not None and "dense" in settings.signals:
            legs["dense"] = self._dense("text", vector, limit, filters, nodes, settings.mmr)
        store = self.signals.get("text")
        if query and "bm25" in settings.signals and store is not None and store.exists():
            legs.update(store.query(text=query, limit=limit, filters=filters, point_ids=True))
        return legs

    def image_legs(self, query: str, vectors: Dict[str, Any], settings: FusionSettings, limit: int,
                   filters: Optional[MetadataFilters], nodes: Dict[str, Any]) -> Dict[str, Leg]:
        legs: Dict[str, Leg] = {}
        text_vector = vectors.get("text")
        for name, vector in (("clip", vectors.get("clip_text")), ("clip_image", vectors.get("clip_image"))):
            if vector is not None and name in settings.signals:
                legs[name] = self._dense("image", vector, limit, filters, nodes)
        store = self.signals.get("image")
        if store is not None and store.exists() and query:
            words = text_vector if "words" in settings.signals else None
            found = store.query(text=query if "words_bm25" in settings.signals else "", words_vector=words,
                                limit=limit, filters=filters, point_ids=True)
            if "bm25" in found:
                legs["words_bm25"] = found["bm25"]
            if "words" in found:
                legs["words"] = found["words"]
        return legs

    def linked(self, kind: str, ranked: Sequence[Fused], nodes: Dict[str, Any], filters: Optional[MetadataFilters],
               limit: int) -> Leg:
        """Items of `kind` ranked by their article's place in `ranked` (the other modality)."""
        store = self.signals.get(kind)
        if store is None or not store.exists() or not ranked:
            return []
        # the articles of the ranked items: from nodes at hand, else from the other modality's
        # signal store (its payload names the article; no node is read)
        keys: Dict[str, Optional[str]] = {f.id: article_key(nodes[f.id].metadata) for f in ranked if f.id in nodes}
        other = self.signals.get("text" if kind == "image" else "image")
        missing = [f.id for f in ranked if f.id not in keys]
        if missing and other is not None and other.exists():
            keys.update({point_id_for(n): key for n, key in other.article_keys(missing).items()})
        wanted = [k for k in dict.fromkeys(keys.values()) if k]
        members = {point_id_for(n): key
                   for n, key in store.ids_of_articles(wanted[:limit], filters=filters, limit=limit * 4).items()}
        return article_ranking([(f.id, f.score) for f in ranked], keys, members)[:limit]

    def only_matching(self, kind: str, legs: Dict[str, Leg], filters: Optional[MetadataFilters]) -> Dict[str, Leg]:
        """The legs without the points that break the filters (one id-only read per kind).

        The signal stores keep scalar metadata only, so their legs cannot test a filter on a
        list field; their candidates are checked against the collection before fusion.
        """
        if filters is None or self.matching is None or not any(legs.values()):
            return legs
        keep = self.matching(kind, list(dict.fromkeys(i for leg in legs.values() for i, _ in leg)), filters)
        return {name: [(i, score) for i, score in leg if i in keep] for name, leg in legs.items()}

    def _fetch(self, kind: str, point_ids: Sequence[str], nodes: Dict[str, Any]) -> None:
        wanted = [n for n in dict.fromkeys(point_ids) if n not in nodes]
        if wanted:
            for node in self.get_nodes(kind, wanted):
                nodes[point_id_for(node.node_id)] = node

    # -- the search ----------------------------------------------------------------------
    def search(self, query: str, vectors: Dict[str, Any], *, top_k: int, image_top_k: int,
               filters: Optional[MetadataFilters], settings: FusionSettings, want_text: bool, want_images: bool,
               min_images: int = 0, limit: Optional[int] = None) -> List[Hit]:
        """The fused list for a query whose vectors are computed (see `Retriever.search`)."""
        from rag.search.nodes import node_to_hit

        depth = candidates_for(top_k, image_top_k)
        text_nodes: Dict[str, Any] = {}
        image_nodes: Dict[str, Any] = {}

        text_ranked: List[Fused] = []
        if want_text and query:
            legs = self.text_legs(query, vectors.get("text"), settings, depth, filters, text_nodes)
            text_ranked = fuse_modality(self.only_matching("text", legs, filters), settings)
        image_ranked: List[Fused] = []
        if want_images:
            legs = self.image_legs(query, vectors, settings, depth, filters, image_nodes)
            if "article" in settings.signals and text_ranked:
                legs["article"] = self.linked("image", text_ranked, text_nodes, filters, depth)
            legs = self.only_matching("image", legs, filters)
            image_ranked = fuse_modality(legs, picture_weighted(settings, legs))
        if want_text and not query and image_ranked and "article" in settings.signals:
            # an image query: passages of the articles of the best images
            legs = {"article": self.linked("text", image_ranked, image_nodes, filters, depth)}
            text_ranked = fuse_modality(self.only_matching("text", legs, filters), settings)

        text_top = text_ranked[:top_k] if want_text else []
        image_top = image_ranked[:image_top_k] if want_images else []
        total = limit if limit is not None else len(text_top) + len(image_top)
        if min_images > image_top_k and image_top:
            raise RagError(f"--min-images {min_images} is more than --image-top-k {image_top_k}")
        try:
            ranking = fuse_all(text_top, image_top, settings, total, min_images=min(min_images, len(image_top)),
                               picture_query=not query)
        except ValueError as exc:
            raise RagError(str(exc)) from None
        self._fetch("text", [f.id[1] for f in ranking.items if f.id[0] == "text"], text_nodes)
        self._fetch("image", [f.id[1] for f in ranking.items if f.id[0] == "image"], image_nodes)
        hits = []
        for item in ranking.items:
            kind, point_id = item.id
            node = (text_nodes if kind == "text" else image_nodes).get(point_id)
            if node is None:  # the signal store knows a node its collection lost: skip it
                continue
            hit = node_to_hit(node, item.score)
            hit.signals = {name: dict(value) for name, value in item.signals.items()}
            hits.append(hit)
        return hits


def picture_weighted(settings: FusionSettings, legs: Dict[str, Leg]) -> FusionSettings:
    """For a query with words and a picture: the picture's leg weighs as much as all the words' legs.

    Otherwise four legs that read the words (clip, words, words_bm25, article) outvote the one
    that looks at the picture, however close the match.
    """
    if not legs.get("clip_image"):
        return settings
    worded = sum(settings.weights.get(name, 1.0) for name in legs if name != "clip_image" and legs[name])
    if not worded:
        return settings
    return replace(settings, weights={**settings.weights, "clip_image": worded})


def leg_of_nodes(found: Sequence[Any], scores: Sequence[float], nodes: Dict[str, Any]) -> Leg:
    """A leg (point id, score) of nodes a store returned, which are kept in `nodes` by point id."""
    leg = []
    for node, score in zip(found, scores):
        point_id = point_id_for(node.node_id)
        nodes.setdefault(point_id, node)
        leg.append((point_id, float(score)))
    return leg


def dense_leg(store: Any, vector: List[float], limit: int, filters: Optional[MetadataFilters],
              nodes: Dict[str, Any]) -> Leg:
    """A collection's dense leg, (point id, score) best first: ids only where the store can
    (`query_ids`), else from the nodes of its LlamaIndex query (kept in `nodes`)."""
    if limit <= 0:
        return []
    query_ids = getattr(store, "query_ids", None)
    if query_ids is not None:
        return query_ids(vector, limit, filters)
    found, scores = store_query(store, vector, limit, filters)
    return leg_of_nodes(found, scores, nodes)


def store_query(store: Any, vector: List[float], limit: int, filters: Optional[MetadataFilters]) -> Tuple[list, list]:
    """(nodes, scores) of a LlamaIndex vector store's dense query."""
    if limit <= 0:
        return [], []
    result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=limit, filters=filters))
    nodes = result.nodes or []
    return nodes, list(result.similarities or [0.0] * len(nodes))


def edge_mmr_query(store: Any, vector: List[float], limit: int, filters: Optional[MetadataFilters],
                   lambda_: float) -> Tuple[list, list]:
    """(nodes, scores) by the engine's maximal marginal relevance (qdrant-edge, or qdrant-client's Query API)."""
    import qdrant_edge as qe

    from rag.stores.base import QdrantClientCollection
    from rag.stores.edge import QdrantEdgeVectorStore
    from rag.stores.edge_shard import node_from_record

    if isinstance(store, QdrantClientCollection):  # a server, or qdrant-client's local folder
        return store.mmr_query(vector, limit, filters, lambda_)
    shard = store.client if isinstance(store, QdrantEdgeVectorStore) else None
    if shard is None:  # other backends, or an empty store: plain nearest neighbours
        return store_query(store, vector, limit, filters)
    points = shard.query(qe.QueryRequest(limit=limit, query=qe.Mmr(list(vector), lambda_, max(limit * 4, 50)),
                                         filter=_edge_filter(filters), with_payload=True))
    return [node_from_record(p.payload) for p in points], [float(p.score) for p in points]
