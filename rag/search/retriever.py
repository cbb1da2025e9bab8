"""Retrieval: text -> passages (BGE) and images (CLIP text tower); image -> images (CLIP).

A query is text, an image, or both. Query vectors are computed here and handed to the stores
directly, so nothing is written back into a caller's `QueryBundle` (stock defect 2), and the
two encoders run at the same time. `as_llama_retriever()` offers the same search as a
LlamaIndex retriever for query engines.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery

from rag.config import Settings
from rag.errors import RagError
from rag.types import Hit
from rag.index.core import RagIndex, open_index
from rag.search.nodes import hit_to_node, hit_to_scored_node, node_to_hit  # noqa: F401 (re-exported)

ImageQuery = Union[str, Path, None]


def average_vectors(a: List[float], b: List[float]) -> List[float]:
    """The normalised mean of two unit vectors: a joint text-and-image query."""
    joint = [x + y for x, y in zip(a, b)]
    norm = sum(x * x for x in joint) ** 0.5 or 1.0
    return [x / norm for x in joint]


def as_filters(filters: Union[MetadataFilters, Dict[str, Any], None]) -> Optional[MetadataFilters]:
    """Accept LlamaIndex filters or a plain {key: value} dict (all must match)."""
    if filters is None or isinstance(filters, MetadataFilters):
        return filters
    from llama_index.core.vector_stores.types import ExactMatchFilter

    return MetadataFilters(filters=[ExactMatchFilter(key=k, value=v) for k, v in filters.items()])


class Retriever:
    """Searches both collections of an index; models load only when a query needs them."""

    def __init__(self, index: RagIndex) -> None:
        self.index = index

    def _query(self, store: Any, vector: List[float], top_k: int, filters: Optional[MetadataFilters]) -> List[Hit]:
        result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=top_k, filters=filters))
        nodes = result.nodes or []
        scores = result.similarities or [0.0] * len(nodes)
        return [node_to_hit(node, score) for node, score in zip(nodes, scores)]

    def search(
        self,
        query: str = "",
        image: ImageQuery = None,
        top_k: int = 5,
        image_top_k: int = 3,
        filters: Union[MetadataFilters, Dict[str, Any], None] = None,
    ) -> List[Hit]:
        """Passages (best first) then images (best first) for a text and/or image query."""
        query = (query or "").strip()
        if not query and image is None:
            raise RagError("nothing to search for: give a text query, an image (--image PATH), or both")
        if image is not None and not Path(image).is_file():
            raise RagError(f"{image}: no such image file")
        filters = as_filters(filters)
        # "any points?" from the stores' statistics: an exact count would visit every point
        want_text = bool(query) and top_k > 0 and self.index.has_points("text")
        want_images = image_top_k > 0 and self.index.has_points("image")

        jobs: Dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=3) as pool:
            if want_text:
                jobs["text"] = pool.submit(self.index.text_embedding.get_query_embedding, query)
            if want_images and query:
                jobs["clip_text"] = pool.submit(self.index.image_embedding.get_query_embedding, query)
            if want_images and image is not None:
                jobs["clip_image"] = pool.submit(self.index.image_embedding.get_image_embedding, str(image))
            vectors = {name: job.result() for name, job in jobs.items()}

        hits: List[Hit] = []
        if "text" in vectors:
            hits += self._query(self.index.stores.text, vectors["text"], top_k, filters)
        if want_images:
            if "clip_text" in vectors and "clip_image" in vectors:
                image_vector = average_vectors(vectors["clip_text"], vectors["clip_image"])
            else:
                image_vector = vectors.get("clip_image") or vectors["clip_text"]
            hits += self._query(self.index.stores.image, image_vector, image_top_k, filters)
        return hits

    def as_llama_retriever(self, top_k: int = 5, image_top_k: int = 3) -> "LlamaRetriever":
        return LlamaRetriever(self, top_k=top_k, image_top_k=image_top_k)


class LlamaRetriever(BaseRetriever):
    """The same search as a LlamaIndex retriever (nodes with scores, passages then images)."""

    def __init__(self, retriever: Retriever, top_k: int = 5, image_top_k: int = 3) -> None:
        super().__init__()
        self._retriever = retriever
        self._top_k = top_k
        self._image_top_k = image_top_k

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        image = query_bundle.image_path if getattr(query_bundle, "image_path", None) else None
        hits = self._retriever.search(query_bundle.query_str, image=image, top_k=self._top_k,
                                      image_top_k=self._image_top_k)
        return [hit_to_scored_node(hit) for hit in hits]


def open_retriever(settings: Optional[Settings] = None) -> Retriever:
    """A retriever over the index the settings describe."""
    return Retriever(open_index(settings))
