"""LlamaIndex `Document`s and `ImageDocument`s into the index, through the same ledger as files.

`ingest_documents(index, docs)` is the `rag ingest` of LlamaIndex habits: `SimpleDirectoryReader`
output, hand-made `Document(text=...)`, `ImageDocument(image_path=...)` or
`ImageDocument(image=<base64>)`. Each becomes one ledger entry:

- a document read from a file (`metadata["file_path"]`, as `SimpleDirectoryReader` sets it) is
  keyed by that file, exactly as `rag ingest` keys it, so both ways of ingesting a folder give
  the same points and either one finds the other's work done. Documents that share a file
  (pages, sections) are joined in order. An image file is an image even when the reader
  loaded it as a plain `Document` (stock defect 1: its "text" is the PNG's bytes);
- any other document is keyed by its `doc_id` (`id_`): give a stable id to update it later.

The same document twice embeds nothing; a changed one replaces its nodes. Image bytes are
written once to `<storage>/documents/<sha256>.<ext>`, so image hits have a file to show and
send. Image URLs are not fetched (skipped with the reason).
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from rag.corpus.files import SourceFile, classify, decode_text, hash_source, sha256_bytes
from rag.errors import BadInputError
from rag.index.core import RagIndex
from rag.index.ingest import ID_NAMESPACE, Ingestor, PendingFile, doc_id_for
from rag.types import IngestReport

DOCUMENTS_DIR = "documents"  # image bytes of ImageDocuments without a file, under the storage folder
_MIME_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
                "image/bmp": ".bmp", "image/tiff": ".tiff"}


def _user_metadata(doc: Any) -> Dict[str, Any]:
    """The document's own metadata that a payload can hold (plain values)."""
    return {k: v for k, v in (doc.metadata or {}).items() if isinstance(v, (str, int, float, bool))}


def _file_of(doc: Any) -> Optional[Path]:
    """The file a document was read from, or its ImageDocument.image_path (resolved)."""
    name = getattr(doc, "image_path", None) or (doc.metadata or {}).get("file_path")
    return Path(name).expanduser().resolve() if name else None


def _image_bytes(doc: Any) -> Optional[bytes]:
    """The bytes of an ImageDocument given as data (base64 `image` or an image resource)."""
    if not getattr(doc, "image", None):
        return None
    data = doc.resolve_image().read()
    try:  # LlamaIndex keeps image data base64-encoded; resolve_image hands back either form
        return base64.b64decode(data, validate=True)
    except ValueError:
        return data


def _image_suffix(doc: Any, data: bytes) -> str:
    mime = getattr(doc, "image_mimetype", None)
    if mime in _MIME_SUFFIX:
        return _MIME_SUFFIX[mime]
    from io import BytesIO

    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as image:
            return "." + (image.format or "png").lower().replace("jpeg", "jpg")
    except Exception:  # undecodable: checked_image reports it when the file is embedded
        return ".img"


class DocumentIngestor(Ingestor):
    """One ingest of LlamaIndex documents (planning differs from files; embedding is shared)."""

    def stored_image(self, doc: Any, data: bytes) -> Path:
        """Write image bytes under the storage folder, named by their hash (once)."""
        folder = Path(self.index.settings.storage) / DOCUMENTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sha256_bytes(data)}{_image_suffix(doc, data)}"
        if not path.is_file():
            path.write_bytes(data)
        return path.resolve()

    def entry(self, doc: Any) -> Tuple[str, str, Optional[Path]]:
        """(ledger key, modality, file) of one document; BadInputError when it cannot be used."""
        from llama_index.core.schema import Document, ImageDocument

        if not isinstance(doc, Document):
            raise BadInputError(f"not a LlamaIndex Document but {type(doc).__name__}")
        path = _file_of(doc)
        if path is not None:
            if isinstance(doc, ImageDocument) or classify(path) == "image":
                if not path.is_file():
                    raise BadInputError(path, "no such image file")
                return str(path), "image", path
            return str(path), "text", path
        if isinstance(doc, ImageDocument):
            data = _image_bytes(doc)
            if data is None:
                what = f"an image URL ({doc.image_url})" if getattr(doc, "image_url", None) else "no image"
                raise BadInputError(f"document {doc.doc_id}", f"{what}: give image_path or the image bytes")
            return f"document:{doc.doc_id}", "image", self.stored_image(doc, data)
        return f"document:{doc.doc_id}", "text", None

    def plan_documents(self, docs: Iterable[Any]) -> List[PendingFile]:
        """New or changed documents (ledger keys in first-seen order); unchanged ones are counted."""
        grouped: Dict[str, Tuple[str, Optional[Path], List[Any]]] = {}
        for doc in docs:
            try:
                key, modality, path = self.entry(doc)
            except BadInputError as exc:
                self.skip(exc.path or getattr(doc, "doc_id", type(doc).__name__), exc.reason)
                continue
            grouped.setdefault(key, (modality, path, []))[2].append(doc)
        pending = []
        for key, (modality, path, group) in grouped.items():
            try:
                item = self.pending(key, modality, path, group)
            except BadInputError as exc:
                self.skip(exc.path or key, exc.reason)
                continue
            entry = self.index.ledger.files.get(key)
            if entry is not None and entry.sha256 == item.sha256:
                self.report.unchanged += 1
                continue
            pending.append(item)
        return pending

    def pending(self, key: str, modality: str, path: Optional[Path], group: List[Any]) -> PendingFile:
        """The PendingFile of one ledger entry (the documents that share it, joined)."""
        first = group[0]
        meta: Dict[str, Any] = {}
        for doc in group:
            meta.update(_user_metadata(doc))
        if modality == "image":
            assert path is not None
            sha = hash_source(path)
            text = None
        else:
            text = "\n\n".join(doc.text for doc in group)
            sha = sha256_bytes(text.encode("utf-8"))
            if path is not None and path.is_file() and len(group) == 1:
                try:  # the file's own hash when the text is the file: `rag ingest` then finds it done
                    data = path.read_bytes()
                    if decode_text(data, str(path)) == text:
                        sha = sha256_bytes(data)
                except (OSError, BadInputError):
                    pass
        if path is not None and not key.startswith("document:"):
            doc_id = doc_id_for(path)
            meta.update({"file_path": str(path), "file_name": path.name})
        else:
            doc_id = str(uuid.uuid5(ID_NAMESPACE, key))
            meta["document_id"] = first.doc_id
            if modality == "image":
                meta.update({"file_path": str(path), "file_name": path.name})  # type: ignore[union-attr]
        meta.update({"modality": modality, "sha256": sha})
        source = SourceFile(path if path is not None else Path(f"{first.doc_id}.document"), modality)
        return PendingFile(source, sha, doc_id, meta, text=text, key=key)

    def run_documents(self, docs: Iterable[Any]) -> IngestReport:
        """Plan, embed, write and record; then build the search graphs."""
        import time

        started = time.perf_counter()
        pending = self.plan_documents(docs)
        self.ingest_text([p for p in pending if p.source.modality == "text"])
        self.ingest_images([p for p in pending if p.source.modality == "image"])
        self.build_search_graphs()
        self.report.points = self.index.counts()
        self.report.seconds = round(time.perf_counter() - started, 3)
        return self.report


def ingest_documents(index: RagIndex, docs: Iterable[Any], progress: bool = False) -> IngestReport:
    """Index LlamaIndex Documents and ImageDocuments incrementally (see the module docstring)."""
    return DocumentIngestor(index, progress=progress).run_documents(docs)
