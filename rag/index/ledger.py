"""The ledger: which files an index holds, and which models embedded it.

`<storage>/ledger.json` remembers, for every ingested file, the hash of its bytes and the id
of its document, so re-ingesting an unchanged file embeds nothing and a changed one replaces
its nodes. It also records the models that built the index: opening it later uses them when
no model is set explicitly, and refuses an explicitly different one instead of mixing vector
spaces.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict

from rag.config import Settings
from rag.errors import StorageError

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
        """The ledger at `path` (empty when there is none); StorageError when it is damaged."""
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
            raise damaged_ledger(path, str(exc)) from None
        try:
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            files = {str(name): FileEntry(**entry) for name, entry in (data.get("files") or {}).items()}
            models = {str(k): str(v) for k, v in (data.get("models") or {}).items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise damaged_ledger(path, str(exc)) from None
        return cls(path, files, models)

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


def damaged_ledger(path: Path, reason: str) -> StorageError:
    """The error for a ledger.json that cannot be read back: names it and how to recover."""
    reason = " ".join(reason.split())[:200]
    return StorageError(
        f"{path}: the ledger is damaged ({reason}). To recover, move the index folder {path.parent} "
        "aside and run `rag ingest` on your folders again to rebuild it."
    )


MODEL_FIELDS = {"text": "text_model", "image": "image_model"}  # ledger key -> settings field


def settle_models(ledger: Ledger, settings: Settings, strict: bool = True) -> Settings:
    """The settings to open this index with: the index remembers which models embedded it.

    A model that was not set explicitly (no RAG_TEXT_MODEL / RAG_IMAGE_MODEL, no override) is
    the one recorded in the ledger. An explicitly different one is refused, so vector spaces
    never mix; with ``strict=False`` (reading the index without embedding anything, as
    `rag info` does) the recorded one is used instead.
    """
    adopted = {}
    for kind, name in MODEL_FIELDS.items():
        recorded, wanted = ledger.models.get(kind), getattr(settings, name)
        if not recorded or recorded == wanted:
            continue
        if strict and settings.is_explicit(name):
            raise StorageError(
                f"the index in {settings.storage} was built with the {kind} model {recorded!r}, "
                f"but RAG_{name.upper()} is {wanted!r}. Use the same model, or another RAG_STORAGE for a new index."
            )
        adopted[name] = recorded
    return replace(settings, **adopted) if adopted else settings
