"""Incremental ingestion: files -> nodes with stable ids -> embeddings -> both collections.

Node ids derive from the file's path and the hash of its bytes, so an unchanged file is
skipped without loading a model, a changed file replaces its nodes, and a crash part-way
is repaired by running the same ingest again (the ledger is saved after every group).
Bad files are reported with the reason and never remove what was indexed before.
Which files are read at all (special files, links leading outside the folder, link loops,
odd names) is decided by `rag.corpus.files.scan_paths`; see that module. Images that
cannot be decoded, vanish after the scan, or are too small (under MIN_IMAGE_SIDE) or too
elongated (over MAX_ASPECT_RATIO) for CLIP are skipped; animated and multi-page images
contribute their first frame.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import ImageNode, NodeRelationship, RelatedNodeInfo, TextNode
from tqdm.auto import tqdm

from rag.corpus.files import (
    SourceFile,
    Skipped,
    MAX_TEXT_BYTES,
    decode_text,
    hash_source,
    nfc_key,
    read_source_bytes,
    scan_paths,
    sha256_bytes,
    title_and_body,
)
from rag.media.images import open_image
from rag.corpus.manifest import find_manifests
from rag.errors import BadInputError
from rag.index.core import FileEntry, RagIndex
from rag.types import IngestReport

ID_NAMESPACE = uuid.UUID("6c1d3f0e-5a57-4f53-9d0c-2f3b1c7e9a41")
TEXT_GROUP = 256  # passages embedded and written per commit
IMAGE_GROUP = 64  # images embedded and written per commit
GRAPH_NOTICE = 5000  # say so before a graph build over this many new points (seconds, not ms)
DECODE_WORKERS = 2  # threads decoding (and preprocessing) images ahead of the model
# Images that cannot carry a picture CLIP can read: skipped, with the reason.
MIN_IMAGE_SIDE = 8  # pixels, shorter side
MAX_ASPECT_RATIO = 50  # longer side / shorter side (CLIP sees a centre square)
# Manifest fields copied into node metadata (and so into every hit).
MANIFEST_FIELDS = ("title", "url", "caption", "license", "attribution", "origin", "source_url", "lang")


@dataclass
class PendingFile:
    """One new or changed file on its way into the index."""

    source: SourceFile
    sha256: str
    doc_id: str
    meta: Dict[str, Any]
    text: Optional[str] = None  # decoded text of a text file, until it is chunked
    nodes: List[Any] = field(default_factory=list)  # its nodes, once made (embedded before commit)
    key: Optional[str] = None  # its ledger key when not its path (a LlamaIndex Document without a file)

    @property
    def ledger_key(self) -> str:
        return self.key or str(self.source.path)


def doc_id_for(path: Path) -> str:
    """The document id of a file: stable across runs, changes only with its location."""
    return str(uuid.uuid5(ID_NAMESPACE, f"file:{path}"))


def node_id_for(doc_id: str, sha256: str, position: int) -> str:
    """A node id from the document, the content hash and the chunk's position."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{doc_id}:{sha256}:{position}"))


def base_metadata(source: SourceFile, sha256: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    meta: Dict[str, Any] = {
        "modality": source.modality,
        "file_path": str(source.path),
        "file_name": source.path.name,
        "sha256": sha256,
    }
    for key in MANIFEST_FIELDS:
        if manifest.get(key) not in (None, ""):
            meta[key] = manifest[key]
    return meta


def make_splitter(tokenizer: Any, chunk_size: int, chunk_overlap: int) -> SentenceSplitter:
    """Sentence-aware chunks measured in the text model's own tokens (BGE reads 512 at most)."""
    return SentenceSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        tokenizer=lambda text: tokenizer.encode(text, add_special_tokens=False),
    )


def text_nodes_for(pending: PendingFile, text: str, splitter: SentenceSplitter) -> List[TextNode]:
    """Chunk one article into TextNodes with stable ids and the article's metadata."""
    title, body = title_and_body(text, pending.meta.get("title") or pending.source.path.stem)
    meta = {**pending.meta, "title": pending.meta.get("title") or title}
    nodes = []
    for position, chunk in enumerate(splitter.split_text(body)):
        node = TextNode(id_=node_id_for(pending.doc_id, pending.sha256, position), text=chunk,
                        metadata={**meta, "chunk": position})
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=pending.doc_id)
        node.excluded_embed_metadata_keys = list(node.metadata)
        node.excluded_llm_metadata_keys = [k for k in node.metadata if k not in ("title", "url")]
        nodes.append(node)
    return nodes


def image_node_for(pending: PendingFile) -> ImageNode:
    meta = {**pending.meta}
    meta.setdefault("title", pending.source.path.stem)
    node = ImageNode(id_=node_id_for(pending.doc_id, pending.sha256, 0), image_path=str(pending.source.path),
                     text=meta.get("caption", ""), metadata=meta)
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=pending.doc_id)
    return node


def checked_image(path: Path, max_pixels: int) -> Any:
    """The RGB image of a file, or BadInputError naming it: unreadable, vanished since the
    scan, undecodable (whatever the decoder raised), too small or too elongated to embed."""
    try:
        image = open_image(path, max_pixels)
    except BadInputError:
        raise
    except FileNotFoundError:
        raise BadInputError(path, "vanished since the scan (no such file)") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read file ({exc.strerror or exc})") from None
    except Exception as exc:  # a decoder failing on hostile bytes: that file is skipped, the run goes on
        raise BadInputError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from None
    width, height = image.size
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadInputError(path, f"too elongated to embed ({width}x{height}; at most {MAX_ASPECT_RATIO}:1)")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise BadInputError(path, f"too small to embed ({width}x{height}; the shorter side must be >= {MIN_IMAGE_SIDE} px)")
    return image


def embed_input(node: TextNode) -> str:
    """What BGE reads for a passage: its article title, then the passage."""
    title = node.metadata.get("title")
    return f"{title}\n\n{node.text}" if title else node.text


def groups(items: Sequence[PendingFile], size_of: Callable[[PendingFile], int], limit: int) -> Iterator[List[PendingFile]]:
    """Consecutive files whose sizes add up to about `limit` (a file is never split)."""
    group: List[PendingFile] = []
    total = 0
    for item in items:
        group.append(item)
        total += size_of(item)
        if total >= limit:
            yield group
            group, total = [], 0
    if group:
        yield group


class Ingestor:
    """Runs one ingest against an open index."""

    def __init__(self, index: RagIndex, progress: bool = True) -> None:
        self.index = index
        self.progress = progress
        self.report = IngestReport()

    def skip(self, path: Any, reason: str) -> None:
        self.report.skipped.append(asdict(Skipped(str(path), reason)))

    def skip_bad(self, item: PendingFile, exc: BadInputError) -> None:
        """Record a file's BadInputError as skipped (its own path when it names one)."""
        self.skip(exc.path or item.source.path, exc.reason)

    def bar(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit="item", disable=not self.progress or total == 0, leave=False)

    # -- planning --------------------------------------------------------------------
    def plan(self, paths: Sequence[Path]) -> List[PendingFile]:
        manifest = find_manifests(paths)
        records = {nfc_key(path): record for path, record in manifest.items()}
        files, skipped, ignored = scan_paths(paths, listed=set(manifest))
        for item in skipped:
            self.skip(item.path, item.reason)
        self.report.ignored = len(ignored)
        pending = []
        for source in files:
            try:  # text is read once, here; images are only hashed (decoded later, in workers)
                data = read_source_bytes(source.path, MAX_TEXT_BYTES) if source.modality == "text" else None
                sha = sha256_bytes(data) if data is not None else hash_source(source.path)
            except BadInputError as exc:
                self.skip(source.path, exc.reason)
                continue
            entry = self.index.ledger.files.get(str(source.path))
            if entry is not None and entry.sha256 == sha:
                self.report.unchanged += 1
                continue
            meta = base_metadata(source, sha, records.get(nfc_key(source.path), {}))
            item = PendingFile(source, sha, doc_id_for(source.path), meta)
            if source.modality == "text":
                try:
                    item.text = decode_text(data or b"", str(source.path))  # chunked once the tokenizer is loaded
                except BadInputError as exc:
                    self.skip_bad(item, exc)
                    continue
            pending.append(item)
        return pending

    # -- writing ---------------------------------------------------------------------
    def commit(self, items: List[PendingFile]) -> None:
        """Replace the documents of these files by their new nodes, then record them."""
        replaced = [i.doc_id for i in items if i.ledger_key in self.index.ledger.files]
        self.index.delete_documents(replaced)
        text = [n for i in items for n in i.nodes if not isinstance(n, ImageNode)]
        images = [n for i in items for n in i.nodes if isinstance(n, ImageNode)]
        self.index.add(text, images)
        self.index.remember_models()
        for item in items:
            self.index.ledger.files[item.ledger_key] = FileEntry(item.sha256, item.doc_id, item.source.modality, len(item.nodes))
        self.index.ledger.save()
        self.report.files_indexed += len(items)
        self.report.text_nodes += len(text)
        self.report.image_nodes += len(images)

    def ingest_text(self, pending: List[PendingFile]) -> None:
        if not pending:
            return
        embedding = self.index.text_embedding
        tokenizer = getattr(getattr(embedding, "_model", None), "tokenizer", None)
        if tokenizer is None:
            from rag.models.embeddings import load_text_tokenizer

            tokenizer = load_text_tokenizer(self.index.settings)
        splitter = make_splitter(tokenizer, self.index.settings.chunk_size, self.index.settings.chunk_overlap)
        ready = []
        for item in pending:
            item.nodes = text_nodes_for(item, item.text or "", splitter)
            item.text = None  # the chunks hold it now
            if item.nodes:
                ready.append(item)
            else:
                self.skip(item.source.path, "no text left after removing the title")
        with self.bar(sum(len(i.nodes) for i in ready), "Embedding passages") as bar:
            for group in groups(ready, lambda i: len(i.nodes), TEXT_GROUP):
                nodes = [n for i in group for n in i.nodes]
                # Longest first: batches of similar length waste no padding.
                order = sorted(range(len(nodes)), key=lambda k: -len(nodes[k].text))
                vectors = embedding.get_text_embedding_batch([embed_input(nodes[k]) for k in order])
                for k, vector in zip(order, vectors):
                    nodes[k].embedding = vector
                self.commit(group)
                bar.update(len(nodes))

    def decoded_images(self, pending: List[PendingFile], prepare: Optional[Callable[[Any], Any]] = None,
                       ahead: int = 32) -> Iterator[Tuple[PendingFile, Any]]:
        """(file, RGB image -- or `prepare(image)` -- or BadInputError), made by two worker threads
        ahead of the model, at most `ahead` files in advance (memory stays bounded)."""
        from rag.models.embeddings import prefetch

        max_pixels = self.index.settings.max_image_pixels

        def load(item: PendingFile) -> Any:
            try:
                image = checked_image(item.source.path, max_pixels)
            except BadInputError as exc:
                return exc
            return prepare(image) if prepare is not None else image

        yield from zip(pending, prefetch(load, pending, workers=DECODE_WORKERS, ahead=ahead))

    def ingest_images(self, pending: List[PendingFile]) -> None:
        if not pending:
            return
        embedding = self.index.image_embedding
        batch_size = max(1, min(IMAGE_GROUP, getattr(embedding, "embed_batch_size", 16)))
        # What the decoder threads prepare and how a batch is embedded depend on the model.
        from rag.models.image import image_batch_pipeline

        pipeline = image_batch_pipeline(embedding)
        group: List[PendingFile] = []
        pixels: List[Any] = []

        def flush() -> None:
            if not group:
                return
            vectors = pipeline.embed(pixels, [i.source.path for i in group])
            for item, vector in zip(group, vectors):
                node = image_node_for(item)
                node.embedding = vector
                item.nodes = [node]
            self.commit(list(group))
            bar.update(len(group))
            group.clear()
            pixels.clear()

        with self.bar(len(pending), "Embedding images") as bar:
            for item, image in self.decoded_images(pending, pipeline.prepare, ahead=2 * batch_size):
                if isinstance(image, BadInputError):
                    self.skip_bad(item, image)
                    bar.update(1)
                    continue
                group.append(item)
                pixels.append(image)
                if len(group) >= batch_size:
                    flush()
            flush()

    def prune(self, roots: Sequence[Path]) -> None:
        """Forget files under the given folders that no longer exist."""
        prefixes = [str(Path(r).resolve()) for r in roots]
        gone = [name for name in self.index.ledger.files
                if any(name == p or name.startswith(p.rstrip("/") + "/") for p in prefixes) and not Path(name).exists()]
        if not gone:
            return
        self.index.delete_documents(self.index.ledger.files[name].doc_id for name in gone)
        for name in gone:
            del self.index.ledger.files[name]
        self.index.ledger.save()
        self.report.removed = len(gone)

    def build_search_graphs(self) -> None:
        """One HNSW build at the end of the run (cheaper than rebuilding as points arrive).

        Also picks up points an interrupted run wrote; a no-op (microseconds) otherwise.
        """
        new = self.report.text_nodes + self.report.image_nodes
        if self.progress and new >= GRAPH_NOTICE:
            tqdm.write(f"Adding {new} new points to the search graphs...", file=sys.stderr)
        started = time.perf_counter()
        self.index.build_search_graphs()
        self.report.graph_seconds = round(time.perf_counter() - started, 3)

    def run(self, paths: Sequence[Path], prune: bool = False) -> IngestReport:
        started = time.perf_counter()
        pending = self.plan(paths)
        self.ingest_text([p for p in pending if p.source.modality == "text"])
        self.ingest_images([p for p in pending if p.source.modality == "image"])
        if prune:
            self.prune(paths)
        self.build_search_graphs()
        self.report.points = self.index.counts()
        self.report.seconds = round(time.perf_counter() - started, 3)
        return self.report


def ingest(index: RagIndex, paths: Iterable[Path], prune: bool = False, progress: bool = True) -> IngestReport:
    """Index files and folders (see the module docstring); returns what was done and skipped."""
    return Ingestor(index, progress=progress).run([Path(p) for p in paths], prune=prune)
