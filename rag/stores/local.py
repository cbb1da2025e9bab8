"""The qdrant-client backends: a local folder (`QdrantClient(path=...)`) and a Qdrant server.

The stock `QdrantVectorStore` refuses every async call unless an `AsyncQdrantClient` was
passed too (stock defect 7), and a local folder cannot be opened by a second client. Here
the local store's async methods run the sync ones in a worker thread instead; the server
store gets an async client from the factory. Both implement `rag.stores.base.Collection`.
"""

from __future__ import annotations

from llama_index.vector_stores.qdrant import QdrantVectorStore

from rag.stores.base import QdrantClientCollection, ThreadedAsync


class ServerQdrantVectorStore(QdrantClientCollection, QdrantVectorStore):
    """`QdrantVectorStore` on a Qdrant server or cluster (sync and async clients)."""

    @classmethod
    def class_name(cls) -> str:
        return "ServerQdrantVectorStore"


class LocalQdrantVectorStore(ThreadedAsync, QdrantClientCollection, QdrantVectorStore):
    """`QdrantVectorStore` over `QdrantClient(path=...)` whose async API works without an async client."""

    @classmethod
    def class_name(cls) -> str:
        return "LocalQdrantVectorStore"
