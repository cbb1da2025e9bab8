"""The index: two Qdrant collections, the two embedding models (loaded lazily), and the ledger.

The ledger (`<storage>/ledger.json`) remembers, for every ingested file, the hash of its
bytes and the id of its document, so re-ingesting an unchanged file embeds nothing and a
changed one replaces its nodes. It also records which models built the index, so that
opening it with other models fails with a clear message instead of mixing vector spaces.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import BaseNode

from rag.config import Settings
from rag.errors import StorageError
from rag.index.signals import add_signals, open_signal_stores
from rag.stores.factory import StorePair, count_points, open_stores

LEDGER_NAME = "ledger.json"
LEDGER_VERSION = 1


@dataclass
class FileEntry:
    """What the index holds for one source file."""

    sha256: str
    doc_id: str
    modality: str
    nodes: int
    indexed_at: float = field(default_factory=time.time)


@dataclass
class Ledger:
    """Files indexed so far and the models that embedded them; saved atomically."""

    path: Path
    files: Dict[str, FileEntry] = field(default_factory=dict)
    models: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Ledger":
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StorageError(f"{path}: the ledger cannot be read ({exc}); re-ingest into a new RAG_STORAGE") from None
        files = {name: FileEntry(**entry) for name, entry in data.get("files", {}).items()}
        return cls(path, files, dict(data.get("models", {})))

    def save(self) -> None:
        payload = {
            "version": LEDGER_VERSION,
            "models": self.models,
            "files": {name: entry.__dict__ for name, entry in sorted(self.files.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ledger-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


def check_models(ledger: Ledger, settings: Settings) -> None:
    """Refuse to mix vector spaces: the index remembers which models embedded it."""
    wanted = {"text": settings.text_model, "image": settings.image_model}
    for kind, name in wanted.items():
        recorded = ledger.models.get(kind)
        if recorded and recorded != name:
            env = "RAG_TEXT_MODEL" if kind == "text" else "RAG_IMAGE_MODEL"
            raise StorageError(
                f"the index in {settings.storage} was built with the {kind} model {recorded!r}, "
                f"but {env} is {name!r}. Use the same model, or another RAG_STORAGE for a new index."
            )


class RagIndex:
    """Both collections and both models; models load on first use, never at open."""

    def __init__(
        self,
        settings: Settings,
        text_embedding: Optional[BaseEmbedding] = None,
        image_embedding: Optional[MultiModalEmbedding] = None,
        stores: Optional[StorePair] = None,
    ) -> None:
        self.settings = settings
        self.ledger = Ledger.load(Path(settings.storage) / LEDGER_NAME)
        check_models(self.ledger, settings)
        self.stores = stores or open_stores(settings)
        self.signals: Dict[str, Any] = {} if settings.uses_server else open_signal_stores(settings)
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
    def counts(self) -> Dict[str, int]:
        """Points in each collection."""
        return {"text": count_points(self.stores.text), "image": count_points(self.stores.image)}

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
        return any(self.counts().values())

    def delete_documents(self, doc_ids: Iterable[str]) -> None:
        """Delete documents from both collections (the stock index forgets the image one)."""
        doc_ids = list(doc_ids)
        for store in (self.stores.text, self.stores.image):
            if doc_ids and count_points(store):  # a collection not created yet has nothing to delete
                for doc_id in doc_ids:
                    store.delete(doc_id)
        for signals in self.signals.values():
            signals.delete_documents(doc_ids)

    def build_search_graphs(self) -> bool:
        """Index new points of embedded (qdrant-edge) collections in their HNSW graphs.

        Servers index in the background on their own; returns True when anything was built.
        """
        built = False
        for store in (self.stores.text, self.stores.image):
            if hasattr(store, "optimize"):
                built = store.optimize() or built
        for signals in self.signals.values():
            built = signals.optimize() or built
        return built

    def remember_models(self) -> None:
        self.ledger.models = {"text": self.settings.text_model, "image": self.settings.image_model}

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
        """Collections, point counts (and unindexed points), models and storage location."""
        counts = self.counts()
        collections = {
            "text": {"name": self.settings.text_collection, "points": counts["text"]},
            "image": {"name": self.settings.image_collection, "points": counts["image"]},
        }
        for kind, store in (("text", self.stores.text), ("image", self.stores.image)):
            if hasattr(store, "unindexed"):  # qdrant-edge: points its HNSW graph does not hold yet
                collections[kind]["unindexed"] = store.unindexed()
        return {
            "storage": str(Path(self.settings.storage).resolve()),
            "store": self.stores.kind,
            "location": self.stores.location,
            "collections": collections,
            "models": {
                "text": self.ledger.models.get("text", self.settings.text_model),
                "image": self.ledger.models.get("image", self.settings.image_model),
            },
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
