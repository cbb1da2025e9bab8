"""Retrieval: one ranked list of passages and images for a text query, an image, or both.

Query vectors are computed here and handed to the stores directly, so nothing is written back
into a caller's `QueryBundle` (stock defect 2). Each encoder has a `QueryBatcher`: the encoders
of one search run at the same time, and the queries of concurrent searches (a server's
clients) share forward passes.
`rag.search.hybrid` runs each signal's leg and fuses them. `as_llama_retriever()` offers the same search as a
LlamaIndex retriever (`rag.search.llama.RagRetriever`) for query engines.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from llama_index.core.vector_stores.types import MetadataFilters

from rag.config import Settings
from rag.errors import RagError
from rag.types import Hit
from rag.index.core import RagIndex, open_index
from rag.models.hub import split_threads
from rag.models.query_batcher import QueryBatcher, image_encoder, query_encoder
from rag.search.hybrid import HybridSearch, dense_leg, edge_mmr_query
from rag.search.signals import FusionSettings
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
    """Searches both collections of an index; models load only when a query needs them.

    `fusion` (a `FusionSettings`) says which signals rank the hits and how they are fused;
    the default is what measured best on the sample questions (docs/quality.md).
    """

    def __init__(self, index: RagIndex, fusion: Optional[FusionSettings] = None) -> None:
        self.index = index
        self.fusion = fusion or FusionSettings()
        self._hybrid: Optional[HybridSearch] = None
        self._batchers: Dict[str, QueryBatcher] = {}
        self._batchers_lock = threading.Lock()

    def _encoder(self, name: str) -> QueryBatcher:
        """The batcher of one query encoder: "text", "clip_text" or "clip_image" (models load on first use)."""
        with self._batchers_lock:
            if name in self._batchers:
                return self._batchers[name]
            if name == "text":
                encode = query_encoder(self.index.text_embedding)
            elif name == "clip_text":
                encode = query_encoder(self.index.image_embedding)
            else:
                encode = image_encoder(self.index.image_embedding)
            self._batchers[name] = QueryBatcher(encode, max_batch=self.index.settings.query_batch)
            return self._batchers[name]

    @property
    def hybrid(self) -> HybridSearch:
        if self._hybrid is None:
            stores = {"text": self.index.stores.text, "image": self.index.stores.image}
            self._hybrid = HybridSearch(
                dense_query=lambda kind, vector, limit, filters, nodes: dense_leg(stores[kind], vector, limit, filters, nodes),
                get_nodes=lambda kind, ids: stores[kind].get_nodes(node_ids=list(ids)),
                signals=self.index.signals,
                mmr_query=lambda kind, vector, limit, filters, lam: edge_mmr_query(stores[kind], vector, limit, filters, lam),
                matching=lambda kind, ids, filters: stores[kind].ids_matching(ids, filters),
            )
        return self._hybrid

    def notes(self) -> List[str]:
        """Things a user should know about this index's search (printed by the CLI)."""
        if self.index.needs_signals():
            storage = self.index.settings.storage
            stores = self.index.stores
            where = (f"on the Qdrant server at {stores.location}" if stores.kind == "server" else f"in {storage}")
            return [f"the index {where} was built before lexical and caption signals: "
                    f"searching with dense vectors only. Add them (no image is embedded again) with: "
                    f"rag migrate --signals --storage {storage}"]
        return []

    def search(
        self,
        query: str = "",
        image: ImageQuery = None,
        top_k: int = 5,
        image_top_k: int = 3,
        filters: Union[MetadataFilters, Dict[str, Any], None] = None,
        *,
        min_images: int = 0,
        limit: Optional[int] = None,
        fusion: Optional[FusionSettings] = None,
    ) -> List[Hit]:
        """One list of passages (at most `top_k`) and images (at most `image_top_k`), best first.

        `limit` caps the whole list (default: both caps together); `min_images` keeps that many
        images in it when any matched. Each hit's `signals` gives its rank and score per signal.
        """
        query = (query or "").strip()
        if not query and image is None:
            raise RagError("nothing to search for: give a text query, an image (--image PATH), or both")
        if image is not None and not Path(image).is_file():
            raise RagError(f"{image}: no such image file")
        if min_images < 0 or (limit is not None and limit < 0):
            raise RagError("--min-images and --limit cannot be negative")
        settings = fusion or self.fusion
        filters = as_filters(filters)
        want_text = top_k > 0 and self.index.has_points("text") and (bool(query) or "article" in settings.signals)
        want_images = image_top_k > 0 and self.index.has_points("image")

        jobs: Dict[str, Any] = {}
        both_text_encoders = bool(query) and want_images and "clip" in settings.signals
        # The two text encoders alone split the cores (measured faster); with CLIP's vision tower
        # beside them, or alone, each keeps torch's default (docs/benchmarks.md).
        threads = split_threads(2, self.index.settings.query_threads) if both_text_encoders and image is None else 0
        if query and (want_text or want_images):
            jobs["text"] = self._encoder("text").submit(query, threads)
        if both_text_encoders:
            jobs["clip_text"] = self._encoder("clip_text").submit(query, threads)
        if want_images and image is not None:
            jobs["clip_image"] = self._encoder("clip_image").submit(str(image))
        vectors = {name: job.result() for name, job in jobs.items()}
        if image is not None and "clip_image" not in settings.signals:  # an image query needs it
            settings = replace(settings, signals=settings.signals + ("clip_image",))
        return self.hybrid.search(query, vectors, top_k=top_k, image_top_k=image_top_k, filters=filters,
                                  settings=settings, want_text=want_text, want_images=want_images,
                                  min_images=min_images, limit=limit)

    def as_llama_retriever(self, top_k: int = 5, image_top_k: int = 3, filters: Any = None) -> Any:
        """The same search as a LlamaIndex `BaseRetriever` (`rag.search.llama.RagRetriever`)."""
        from rag.search.llama import RagRetriever

        return RagRetriever(self, top_k=top_k, image_top_k=image_top_k, filters=filters)


def open_retriever(settings: Optional[Settings] = None) -> Retriever:
    """A retriever over the index the settings describe."""
    return Retriever(open_index(settings))
