"""Convert an index from qdrant-client's local folder format to the qdrant-edge format.

Vectors and payloads are copied as they are (nothing is embedded again); the old folder is
kept as `qdrant.migrated` until the user deletes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from rag.config import Settings
from rag.errors import StorageError

BATCH = 256


def nodes_from_points(points: list) -> List[BaseNode]:
    """LlamaIndex nodes, with their embeddings, from qdrant-client records (pure)."""
    nodes = []
    for point in points:
        node = metadata_dict_to_node(point.payload)
        vector = point.vector
        node.embedding = list(vector.get("", vector) if isinstance(vector, dict) else vector)
        nodes.append(node)
    return nodes


def _scroll(client, collection: str) -> Iterator[list]:
    offset = None
    while True:
        points, offset = client.scroll(collection, limit=BATCH, offset=offset, with_payload=True, with_vectors=True)
        if points:
            yield points
        if offset is None:
            return


def migrate_local_to_edge(settings: Settings, progress: Optional[Callable[[str, int], None]] = None) -> Dict[str, int]:
    """Copy both collections from `<storage>/qdrant` into `<storage>/edge`; returns points copied."""
    from qdrant_client import QdrantClient

    from rag.stores.edge import QdrantEdgeVectorStore

    storage = Path(settings.storage)
    source = storage / "qdrant"
    target = storage / "edge"
    if not source.is_dir():
        raise StorageError(f"{storage} has no qdrant-client local index (no {source} folder) to migrate")
    if target.exists() and any(target.iterdir()):
        raise StorageError(f"{target} already exists; move it away before migrating again")
    client = QdrantClient(path=str(source))
    copied: Dict[str, int] = {}
    try:
        for collection in (settings.text_collection, settings.image_collection):
            copied[collection] = 0
            if not client.collection_exists(collection):
                continue
            expected = client.count(collection, exact=True).count
            with QdrantEdgeVectorStore(path=str(target / collection)) as store:
                for points in _scroll(client, collection):
                    store.add(nodes_from_points(points))
                    copied[collection] += len(points)
                    if progress:
                        progress(collection, copied[collection])
                store.optimize()  # one HNSW build for everything copied
                if store.count() != expected:
                    raise StorageError(f"migration of {collection!r} copied {store.count()} of {expected} points; "
                                       f"the old index in {source} is untouched")
    finally:
        client.close()
    source.rename(storage / "qdrant.migrated")
    return copied
