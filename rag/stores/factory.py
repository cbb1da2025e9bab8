"""Open the text and image vector stores that the settings ask for.

- no `RAG_QDRANT_URL`, `RAG_STORE=edge` (default): qdrant-edge, the Qdrant engine in-process,
  one folder per collection under `<storage>/edge/`;
- no URL, `RAG_STORE=local`: qdrant-client's local folder mode (`<storage>/qdrant/`);
- a URL: a Qdrant server or cluster through qdrant-client (sync and async clients both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlsplit, urlunsplit

from rag.config import Settings
from rag.errors import StorageError
from rag.stores.base import Collection


@dataclass
class StorePair:
    """The two collections (each a `rag.stores.base.Collection`) and how to let them go.

    `client`: the qdrant-client of a server's collections (their signal collections use it too).
    """

    text: Collection
    image: Collection
    kind: str
    location: str
    _closers: List[Callable[[], None]] = field(default_factory=list, repr=False)
    client: Any = field(default=None, repr=False)

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()


def _qdrant_client_stores(settings: Settings, client: Any, aclient: Any = None) -> tuple:
    """The two collections through LlamaIndex's QdrantVectorStore: local folder, or server."""
    from rag.stores.local import LocalQdrantVectorStore, ServerQdrantVectorStore

    if aclient is None:
        make = lambda name: LocalQdrantVectorStore(collection_name=name, client=client)  # noqa: E731
    else:
        # shards and replicas apply when the server creates a collection (None: its default)
        extra = {"aclient": aclient, "shard_number": settings.shard_number,
                 "replication_factor": settings.replication_factor}
        make = lambda name: ServerQdrantVectorStore(collection_name=name, client=client, **extra)  # noqa: E731
    return make(settings.text_collection), make(settings.image_collection)


def open_local_stores(settings: Settings) -> StorePair:
    """qdrant-client's local folder mode (brute force; kept for compatibility)."""
    from qdrant_client import QdrantClient

    import warnings

    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
    folder = Path(settings.storage) / "qdrant"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        client = QdrantClient(path=str(folder))
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise StorageError(
                f"{folder} is in use by another process; wait for it to finish or use another RAG_STORAGE"
            ) from None
        raise
    text, image = _qdrant_client_stores(settings, client)
    return StorePair(text, image, "local", str(folder), [client.close])


# Seconds each request to a Qdrant server may take (connect, then each read): a server that
# refuses or never answers fails the command in about this time, not after minutes.
QDRANT_TIMEOUT = 5


def shown_url(url: str) -> str:
    """The URL without user:password@ (safe to print)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_server_url(url: str) -> str:
    """`url` if it reads as http(s)://host[:port][/prefix]; else StorageError naming RAG_QDRANT_URL."""
    problem = None
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # ValueError when out of range or not a number
    except ValueError as exc:
        problem, parts, port = str(exc), None, None
    if problem is None and parts is not None:
        if parts.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif not parts.hostname:
            problem = "it names no host"
        elif port == 0:
            problem = "port 0 is not a server's port"
    if problem:
        raise StorageError(
            f"RAG_QDRANT_URL={shown_url(url)!r} is not a Qdrant server address ({problem}). Use "
            "http(s)://host[:port], e.g. http://localhost:6333, or unset it for the embedded store."
        )
    return url.strip()


def open_server_stores(settings: Settings, timeout: int = QDRANT_TIMEOUT) -> StorePair:
    """A Qdrant server or cluster at RAG_QDRANT_URL; StorageError within seconds when it cannot be reached."""
    from qdrant_client import AsyncQdrantClient, QdrantClient

    url = check_server_url(str(settings.qdrant_url))
    kwargs = {"url": url, "api_key": settings.qdrant_api_key, "timeout": timeout, "check_compatibility": False}
    client = QdrantClient(**kwargs)
    try:
        client.get_collections()  # one cheap request: fail now, with a message, rather than mid-command
    except Exception as exc:
        client.close()
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if settings.qdrant_api_key:
            reason = reason.replace(settings.qdrant_api_key, "***")
        raise StorageError(
            f"Cannot use the Qdrant server at RAG_QDRANT_URL={shown_url(url)!r} ({type(exc).__name__}: {reason}; "
            f"timeout {timeout} s). Is the server running and the address right? Check "
            "RAG_QDRANT_URL and RAG_QDRANT_API_KEY, or unset RAG_QDRANT_URL to use the embedded store."
        ) from None
    aclient = AsyncQdrantClient(**kwargs)
    text, image = _qdrant_client_stores(settings, client, aclient)
    return StorePair(text, image, "server", shown_url(url), [client.close], client=client)


def open_edge_stores(settings: Settings) -> StorePair:
    """qdrant-edge shards, one folder per collection, under <storage>/edge/."""
    from rag.stores.edge import QdrantEdgeVectorStore

    root = Path(settings.storage) / "edge"
    options = edge_options(settings)
    text = QdrantEdgeVectorStore(path=str(root / settings.text_collection), **options)
    try:
        image = QdrantEdgeVectorStore(path=str(root / settings.image_collection), **options)
    except Exception:
        text.close()
        raise
    return StorePair(text, image, "edge", str(root), [text.close, image.close])


def edge_options(settings: Settings) -> Dict[str, Any]:
    """HNSW and quantization options for qdrant-edge, from the settings."""
    return {
        "hnsw_m": settings.hnsw_m,
        "hnsw_ef_construct": settings.hnsw_ef_construct,
        "hnsw_ef": settings.hnsw_ef,
        "quantization": None if settings.quantization == "none" else settings.quantization,
    }


def detect_embedded_format(storage: Path) -> Optional[str]:
    """Which embedded store already lives under `storage` ("edge", "local" or None)."""
    storage = Path(storage)
    if (storage / "edge").is_dir() and any((storage / "edge").iterdir()):
        return "edge"
    if (storage / "qdrant").is_dir() and any((storage / "qdrant").iterdir()):
        return "local"
    return None


def open_stores(settings: Settings) -> StorePair:
    """The two vector stores for these settings (see the module docstring)."""
    if settings.uses_server:
        return open_server_stores(settings)
    existing = detect_embedded_format(settings.storage)
    if existing and existing != settings.store:
        raise StorageError(
            f"{settings.storage} holds an index in the {existing!r} format but RAG_STORE={settings.store!r}. "
            f"Open it with RAG_STORE={existing}, or convert it with: "
            f"rag migrate --storage {settings.storage} --to {settings.store}"
        )
    if settings.store == "local":
        return open_local_stores(settings)
    return open_edge_stores(settings)
