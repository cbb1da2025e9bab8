"""The index's lexical and caption signals: which words each node contributes, and the upgrade.

Passages contribute their title and text to BM25. Images contribute their own words (title,
caption, alt text, description, file name) to BM25 and, embedded with the text model, to
the ``words`` vector. `upgrade_signals` builds both signal stores of an existing index from
the payloads it already holds: the text model reads the images' words, no image is read.

An embedded index keeps its signals in qdrant-edge shards under `<storage>/signals/`; an index
on a Qdrant server keeps them on the server, in a collection beside each dense collection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from rag.config import Settings
from rag.corpus.words import image_words
from rag.stores.base import SignalIndex
from rag.stores.signal_points import SignalPoint

KINDS = ("text", "image")
BATCH = 256


def signal_paths(settings: Settings) -> Dict[str, Path]:
    """Where each collection's signal store lives: `<storage>/signals/<collection>`."""
    root = Path(settings.storage) / "signals"
    return {"text": root / settings.text_collection, "image": root / settings.image_collection}


def open_signal_stores(settings: Settings, stores: Any = None) -> Dict[str, SignalIndex]:
    """Both signal stores (built or not yet: see `SignalIndex.exists`).

    Beside the collections of a Qdrant server (`stores`, a `StorePair` of kind "server"): a
    signal collection on the same server, through the same client. Otherwise qdrant-edge
    shards under `<storage>/signals/`.
    """
    if stores is not None and stores.kind == "server":
        from rag.stores.server_signals import ServerSignalStore, signal_collection

        if stores.client is None:
            raise ValueError("a server StorePair needs its qdrant-client (StorePair.client) for the signal collections")
        names = {"text": settings.text_collection, "image": settings.image_collection}
        return {kind: ServerSignalStore(stores.client, signal_collection(name), kind,
                                        shard_number=settings.shard_number,
                                        replication_factor=settings.replication_factor)
                for kind, name in names.items()}
    from rag.stores.signals import SignalStore

    return {kind: SignalStore(path, kind) for kind, path in signal_paths(settings).items()}


def _doc_id(node: Any) -> str:
    return str(node.ref_doc_id or node.metadata.get("doc_id") or "None")


def text_signal_points(nodes: Sequence[Any]) -> List[SignalPoint]:
    """Passages: BM25 reads the title and the passage, as the dense model does."""
    from rag.index.ingest import embed_input  # ingest imports the index core, which imports this module

    return [SignalPoint(n.node_id, _doc_id(n), n.metadata, embed_input(n)) for n in nodes]


def image_signal_points(nodes: Sequence[Any], embed_texts: Callable[[List[str]], List[List[float]]]) -> List[SignalPoint]:
    """Images: their own words, for BM25 and embedded by `embed_texts` (the text model)."""
    words = [image_words(n.metadata, getattr(n, "image_path", None)) for n in nodes]
    vectors = embed_texts([w or " " for w in words]) if nodes else []
    return [SignalPoint(n.node_id, _doc_id(n), n.metadata, w, list(v)) for n, w, v in zip(nodes, words, vectors)]


def add_signals(stores: Dict[str, SignalIndex], text_nodes: Sequence[Any], image_nodes: Sequence[Any],
                embed_texts: Callable[[List[str]], List[List[float]]]) -> None:
    """Write the signals of newly embedded nodes (creating both stores on the first call)."""
    points = image_signal_points(image_nodes, embed_texts) if image_nodes else []
    if text_nodes:
        stores["text"].add(text_signal_points(text_nodes))
    if points:
        stores["image"].add(points)
    if not stores["image"].exists():  # so that an index with passages only so far counts as built
        dim = len(text_nodes[0].embedding) if text_nodes and text_nodes[0].embedding else None
        stores["image"].ensure(dim or len(embed_texts(["dimension probe"])[0]))
    stores["text"].ensure()


def upgrade_signals(index: Any, progress: Optional[Callable[[str, int], None]] = None) -> Dict[str, int]:
    """Build the signal stores of `index` from its collections' payloads; returns points per kind.

    The stores are rebuilt from scratch, so running it twice is harmless. No image is read.
    """
    counts = {}
    dim = len(index.text_embedding.get_text_embedding("dimension probe"))
    for kind in KINDS:
        fresh = index.signals[kind]
        fresh.drop()
        fresh.ensure(dim if kind == "image" else None)
        collection = index.stores.text if kind == "text" else index.stores.image
        counts[kind] = 0
        for chunk in collection.iter_nodes(BATCH):  # a page at a time: bounded memory at any size
            if kind == "text":
                fresh.add(text_signal_points(chunk))
            else:
                fresh.add(image_signal_points(chunk, index.text_embedding.get_text_embedding_batch))
            counts[kind] += len(chunk)
            if progress:
                progress(kind, len(chunk))
        fresh.optimize()
    return counts
