"""qdrant-client's local folder mode with working async methods.

The stock `QdrantVectorStore` refuses every async call unless an `AsyncQdrantClient` was
passed too (stock defect 7), and a local folder cannot be opened by a second client. Here
the async methods run the sync ones in a worker thread instead.
"""

from __future__ import annotations

import asyncio
from typing import Any, List

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import VectorStoreQueryResult
from llama_index.vector_stores.qdrant import QdrantVectorStore


class LocalQdrantVectorStore(QdrantVectorStore):
    """`QdrantVectorStore` over `QdrantClient(path=...)` whose async API works without an async client."""

    @classmethod
    def class_name(cls) -> str:
        return "LocalQdrantVectorStore"

    async def async_add(self, nodes: List[BaseNode], **kwargs: Any) -> List[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def aquery(self, query: Any, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    async def aget_nodes(self, node_ids: Any = None, filters: Any = None, **kwargs: Any) -> List[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters, **kwargs)

    async def adelete(self, ref_doc_id: str, **kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **kwargs)

    async def adelete_nodes(self, node_ids: Any = None, filters: Any = None, **kwargs: Any) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **kwargs)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)
