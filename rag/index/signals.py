"""The index's lexical and caption signals: which words each node contributes, and the upgrade.

Passages contribute their title and text to BM25. Images contribute their own words (title,
caption, alt text, description, file name) to BM25 and, embedded with the text model, to
the ``words`` vector. `upgrade_signals` builds both signal stores of an existing index from
the payloads it already holds: the text model reads the images' words, no image is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from rag.config import Settings
from rag.corpus.words import image_words
from rag.stores.signals import SignalPoint, SignalStore

KINDS = ("text", "image")
BATCH = 256


def signal_paths(settings: Settings) -> Dict[str, Path]:
    """Where each collection's signal store lives: `<storage>/signals/<collection>`."""
    root = Path(settings.storage) / "signals"
    return {"text": root / settings.text_collection, "image": root / settings.image_collection}


def open_signal_stores(settings: Settings) -> Dict[str, SignalStore]:
    """Both signal stores (built or not yet: see `SignalStore.exists`)."""
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


def add_signals(stores: Dict[str, SignalStore], text_nodes: Sequence[Any], image_nodes: Sequence[Any],
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
        store = index.signals[kind]
        store.close()
        import shutil

        shutil.rmtree(store.path, ignore_errors=True)
        fresh = SignalStore(store.path, kind)
        fresh.ensure(dim if kind == "image" else None)
        index.signals[kind] = fresh
        collection = index.stores.text if kind == "text" else index.stores.image
        nodes = collection.get_nodes() if index.counts()[kind] else []
        for start in range(0, len(nodes), BATCH):
            chunk = nodes[start:start + BATCH]
            if kind == "text":
                fresh.add(text_signal_points(chunk))
            else:
                fresh.add(image_signal_points(chunk, index.text_embedding.get_text_embedding_batch))
            if progress:
                progress(kind, len(chunk))
        fresh.optimize()
        counts[kind] = len(nodes)
    return counts
