"""The index: two Qdrant collections, the two embedding models (loaded lazily), and the ledger.

The ledger (`rag.index.ledger`) knows the files indexed so far and the models that built the
index; opening an index settles which models to use from it (see `settle_models`).

LlamaIndex habits that belong to the index itself: `insert(doc)` / `ingest_documents(docs)`
(LlamaIndex `Document`s and `ImageDocument`s, through the ledger: see `rag.index.documents`)
and `as_llama_index()`. Retrieval and answering live in higher layers: `as_retriever()` and
`as_query_engine()` are on `RagService` (`rag.service`), which owns this index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import BaseNode

from rag.config import Settings
from rag.errors import RagError, StorageError
from rag.index.signals import add_signals, open_signal_stores
from rag.index.ledger import LEDGER_NAME, MODEL_FIELDS, FileEntry, Ledger, settle_models
from rag.stores.base import Collection, SignalIndex
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
        storage = Path(settings.storage)
        if storage.exists() and not storage.is_dir():
            raise StorageError(f"RAG_STORAGE {storage} is a file, not a folder: point RAG_STORAGE "
                               "(or --storage) at a folder, or move the file away.")
        self.ledger = Ledger.load(storage / LEDGER_NAME)
        self.settings = settle_models(self.ledger, settings, strict=check_models)
        self.stores = stores or open_stores(self.settings)
        if stores is None:
            try:
                self._check_consistent()
            except BaseException:
                self.stores.close()
                raise
        try:
            self.signals: Dict[str, SignalIndex] = open_signal_stores(self.settings, self.stores)
        except BaseException:
            if stores is None:
                self.stores.close()
            raise
        for kind in ("text", "image"):  # LlamaIndex's hybrid mode on a collection reads these (one handle each)
            self.collection(kind).use_signals(lambda kind=kind: self.signals.get(kind))
        self._text_embedding = text_embedding
        self._image_embedding = image_embedding

    def _check_consistent(self) -> None:
        """Refuse an index whose ledger lists files that an empty collection lost (its files
        were deleted): re-ingesting would skip them as unchanged and never bring them back."""
        for kind in ("text", "image"):
            listed = sum(1 for e in self.ledger.files.values() if e.modality == kind and e.nodes > 0)
            if listed and not self.collection(kind).has_points():
                raise StorageError(
                    f"The index in {self.settings.storage} is damaged: {self.ledger.path} lists {listed} "
                    f"{kind} file{'s' if listed > 1 else ''}, but the {kind} collection at "
                    f"{self.stores.location} is empty (its files were deleted or lost). To recover, move "
                    f"{self.settings.storage} aside and run `rag ingest` on your folders again to rebuild it."
                )

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

    def insert(self, document: Any, progress: bool = False) -> Any:
        """Index one LlamaIndex `Document` or `ImageDocument` through the ledger (an `IngestReport`)."""
        return self.ingest_documents([document], progress=progress)

    def ingest_documents(self, documents: Iterable[Any], progress: bool = False) -> Any:
        """Index LlamaIndex Documents / ImageDocuments incrementally (see `rag.index.documents`)."""
        from rag.index.documents import ingest_documents

        return ingest_documents(self, documents, progress=progress)

    def as_llama_index(self) -> Any:
        """The same collections as a LlamaIndex `MultiModalVectorStoreIndex` (loads both models).

        Never a silent OpenAI: its `as_query_engine()` / `as_chat_engine()` without an `llm`
        raise a RagError unless LlamaIndex's `Settings.llm` was set explicitly (our no-LLM mode
        is `RagService.as_query_engine()`). Its `insert(doc)` goes through our ledger;
        `insert_nodes()` is refused (nodes bypass the ledger and the image collection).
        """
        index = _guarded_index_class().from_vector_store(
            vector_store=self.stores.text,
            embed_model=self.text_embedding,
            image_vector_store=self.stores.image,
            image_embed_model=self.image_embedding,
        )
        index._rag_index = self
        return index

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


NO_DEFAULT_LLM = (
    "no llm given and LlamaIndex's Settings.llm is not set, so LlamaIndex would pick OpenAI on its "
    "own; this project never does that. Pass llm=... (for example llama_index.core.llms.MockLLM() "
    "or an Ollama/OpenAI-like LLM), set llama_index.core.Settings.llm, or use "
    "RagService(...).as_query_engine(), which answers without an LLM (prompt and sources)."
)


def explicit_llm(llm: Any) -> Any:
    """The LLM a LlamaIndex engine will use: the one given, or `Settings.llm` if someone set it.

    Raises RagError (NO_DEFAULT_LLM) instead of letting LlamaIndex resolve its OpenAI default.
    """
    if llm is not None:
        return llm
    from llama_index.core import Settings as LlamaSettings

    if getattr(LlamaSettings, "_llm", None) is None:
        raise RagError(NO_DEFAULT_LLM)
    return LlamaSettings.llm


_GUARDED: list = []


def _guarded_index_class() -> type:
    """`MultiModalVectorStoreIndex` that never falls back to OpenAI and inserts through the ledger."""
    if _GUARDED:
        return _GUARDED[0]
    from llama_index.core.indices.multi_modal import MultiModalVectorStoreIndex

    class RagMultiModalIndex(MultiModalVectorStoreIndex):
        """Our collections as a LlamaIndex index (see `RagIndex.as_llama_index`)."""

        _rag_index: RagIndex

        def as_query_engine(self, llm: Any = None, **kwargs: Any) -> Any:
            return super().as_query_engine(llm=explicit_llm(llm), **kwargs)

        def as_chat_engine(self, chat_mode: Any = None, llm: Any = None, **kwargs: Any) -> Any:
            if chat_mode is not None:
                kwargs["chat_mode"] = chat_mode
            return super().as_chat_engine(llm=explicit_llm(llm), **kwargs)

        def insert(self, document: Any, **insert_kwargs: Any) -> None:
            self._rag_index.insert(document)

        def insert_nodes(self, nodes: Any, **insert_kwargs: Any) -> None:
            raise RagError("insert_nodes() would bypass the ledger (and images would not be embedded): "
                           "insert LlamaIndex Documents with insert(doc) or RagIndex.ingest_documents(docs)")

    _GUARDED.append(RagMultiModalIndex)
    return RagMultiModalIndex


def open_index(settings: Optional[Settings] = None, **kwargs: Any) -> RagIndex:
    """Open (or create) the index described by the settings (from the environment by default)."""
    return RagIndex(settings or Settings.from_env(), **kwargs)
