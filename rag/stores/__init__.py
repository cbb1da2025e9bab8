"""Vector stores: Qdrant embedded in-process (qdrant-edge) behind LlamaIndex's contract.

Imports are lazy so that ``import rag.stores`` stays cheap; the engine and LlamaIndex load
on first use of a name.
"""

from typing import TYPE_CHECKING, Any

__all__ = ["QdrantEdgeVectorStore", "build_filter", "point_id_for"]

if TYPE_CHECKING:  # pragma: no cover
    from rag.stores.edge import QdrantEdgeVectorStore, build_filter, point_id_for


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rag.stores import edge

        return getattr(edge, name)
    raise AttributeError(f"module 'rag.stores' has no attribute {name!r}")
