"""The index: two Qdrant collections, the two embedding models (loaded lazily), and the ledger.

The ledger (`rag.index.ledger`) knows the files indexed so far and the models that built the
index; opening an index settles which models to use from it (see `settle_models`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import BaseNode

from rag.config import Settings
from rag.index.signals import add_signals, open_signal_stores
from rag.index.ledger import LEDGER_NAME, MODEL_FIELDS, FileEntry, Ledger, settle_models
from rag.stores.base import Collection
from rag.stores.factory import StorePair, open_stores

__all__ = ["FileEntry", "Ledger", "RagIndex", "open_index", "settle_models"]


class RagIndex:
    """Both collections and both models; models load on first use, never at open.

    Models not set explicitly are the ones recorded in the index. ``check_models=False``
    opens an index whatever models are configured, using the recorded ones (for reading
    what it holds, as `rag info` does).
    """

    def __init__(
        self,
        settings: Settings,
        text_embedding: Optional[BaseEmbedding] = None,
        image_embedding: Optional[MultiModalEmbedding] = None,
        stores: Optional[StorePair] = None,
        check_models: bool = True,
    ) -> None:
        self.ledger = Ledger.load(Path(settings.storage) / LEDGER_NAME)
        self.settings = settle_models(self.ledger, settings, strict=check_models)
        self.stores = stores or open_stores(self.settings)
        self.signals: Dict[str, Any] = {} if self.settings.uses_server else open_signal_stores(self.settings)
        self._text_embedding = text_embedding
        self._image_embedding = image_embedding

    # -- models ----------------------------------------------------------------------
    @property
    def text_embedding(self) -> BaseEmbedding:
        if self._text_embedding is None:
            from rag.models.embeddings import load_text_embedding

            self._text_embedding = load_text_embedding(self.settings)
        return self._text_embedding

    @property
    def image_embedding(self) -> MultiModalEmbedding:
        if self._image_embedding is None:
            from rag.models.embeddings import load_image_embedding

            self._image_embedding = load_image_embedding(self.settings)
        return self._image_embedding

    # -- collections -----------------------------------------------------------------
    def collection(self, kind: str) -> Collection:
        """The `text` or `image` collection."""
        return {"text": self.stores.text, "image": self.stores.image}[kind]

    def counts(self) -> Dict[str, int]:
        """Points in each collection (exact)."""
        return {"text": self.stores.text.count(), "image": self.stores.image.count()}

    def has_points(self, kind: str) -> bool:
        """Does the `text` or `image` collection hold any point? (cheap: no count)"""
        return self.collection(kind).has_points()

    def add(self, text_nodes: Sequence[BaseNode], image_nodes: Sequence[BaseNode]) -> None:
        """Write already embedded nodes to their collections, and their signals beside them."""
        with_signals = bool(self.signals) and (bool(text_nodes) or bool(image_nodes)) and not self.needs_signals()
        if text_nodes:
            self.stores.text.add(list(text_nodes))
        if image_nodes:
            self.stores.image.add(list(image_nodes))
        if with_signals:
            add_signals(self.signals, text_nodes, image_nodes, self.text_embedding.get_text_embedding_batch)

    def needs_signals(self) -> bool:
        """Was this index built before the lexical and caption signals (`rag migrate --signals` adds them)?"""
        if not self.signals or all(store.exists() for store in self.signals.values()):
            return False
        return any(self.has_points(kind) for kind in ("text", "image"))

    def delete_documents(self, doc_ids: Iterable[str]) -> None:
        """Delete documents from both collections (the stock index forgets the image one)."""
        doc_ids = list(doc_ids)
        for store in (self.stores.text, self.stores.image):
            if doc_ids and store.has_points():  # a collection not created yet has nothing to delete
                for doc_id in doc_ids:
                    store.delete(doc_id)
        for signals in self.signals.values():
            signals.delete_documents(doc_ids)

    def build_search_graphs(self) -> bool:
        """Index new points in the collections' search graphs (qdrant-edge builds HNSW now).

        Servers index in the background on their own; returns True when anything was built.
        """
        built = [store.build_search_graph() for store in (self.stores.text, self.stores.image)]
        built += [signals.optimize() for signals in self.signals.values()]
        return any(built)

    def remember_models(self) -> None:
        """Record the models of these settings in the ledger (saved with it)."""
        self.ledger.models = {kind: getattr(self.settings, name) for kind, name in MODEL_FIELDS.items()}

    def as_llama_index(self) -> Any:
        """The same collections as a LlamaIndex `MultiModalVectorStoreIndex` (loads both models)."""
        from llama_index.core.indices.multi_modal import MultiModalVectorStoreIndex

        return MultiModalVectorStoreIndex.from_vector_store(
            vector_store=self.stores.text,
            embed_model=self.text_embedding,
            image_vector_store=self.stores.image,
            image_embed_model=self.image_embedding,
        )

    def info(self) -> Dict[str, Any]:
        """Collections, point counts, unindexed points, models and storage location (loads no model)."""
        collections = {}
        for kind, name in (("text", self.settings.text_collection), ("image", self.settings.image_collection)):
            store = self.collection(kind)
            # unindexed: points the search graph does not hold yet (scanned exactly by every query)
            collections[kind] = {"name": name, "points": store.count(), "unindexed": store.unindexed()}
        return {
            "storage": str(Path(self.settings.storage).resolve()),
            "store": self.stores.kind,
            "location": self.stores.location,
            "collections": collections,
            "models": {kind: self.ledger.models.get(kind, getattr(self.settings, name))
                       for kind, name in MODEL_FIELDS.items()},
            "files": len(self.ledger.files),
            "signals": ({kind: store.count() for kind, store in self.signals.items()}
                        if self.signals and all(s.exists() for s in self.signals.values()) else None),
        }

    def close(self) -> None:
        for signals in self.signals.values():
            signals.close()
        self.stores.close()

    def __enter__(self) -> "RagIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_index(settings: Optional[Settings] = None, **kwargs: Any) -> RagIndex:
    """Open (or create) the index described by the settings (from the environment by default)."""
    return RagIndex(settings or Settings.from_env(), **kwargs)
