"""The one converter between `Hit` and LlamaIndex nodes, both ways (pure).

`node_to_hit` reads a stored node (or a `NodeWithScore`, or a node made by `hit_to_node`);
`hit_to_node` makes the node a LlamaIndex retriever or query engine hands out, with the
citation number in `metadata["n"]` when the hit is a numbered source. LlamaIndex is imported
only when a function runs, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any, Optional

from rag.types import Hit


def _is_image(node: Any, meta: dict) -> bool:
    from llama_index.core.schema import ImageNode

    return isinstance(node, ImageNode) or meta.get("modality") == "image"


def node_to_hit(node: Any, score: Optional[float] = None) -> Hit:
    """A typed hit from a LlamaIndex node or NodeWithScore (its score unless `score` is given)."""
    inner = getattr(node, "node", None)
    if inner is not None and hasattr(inner, "metadata"):  # NodeWithScore
        score = node.score if score is None else score
        node = inner
    meta = dict(getattr(node, "metadata", None) or {})
    n = meta.pop("n", None)
    is_image = _is_image(node, meta)
    file = meta.get("file_path") or getattr(node, "image_path", None)
    text = getattr(node, "text", None)
    return Hit(
        modality="image" if is_image else "text",
        score=float(score) if score is not None else None,  # type: ignore[arg-type]
        node_id=node.node_id,
        source=meta.get("source") or meta.get("url") or file or node.node_id,
        title=meta.get("title"),
        url=meta.get("url"),
        file=file,
        text=(meta.get("caption") or text or None) if is_image else text,
        image_path=(getattr(node, "image_path", None) or file) if is_image else None,
        metadata=meta,
        n=int(n) if isinstance(n, int) and not isinstance(n, bool) else None,
    )


def hit_to_node(hit: Hit) -> Any:
    """A LlamaIndex TextNode or ImageNode for a hit; metadata["n"] carries its citation number."""
    from llama_index.core.schema import ImageNode, TextNode

    meta = dict(hit.metadata)
    meta["modality"] = hit.modality
    for key in ("source", "title", "url"):
        if getattr(hit, key) is not None:
            meta.setdefault(key, getattr(hit, key))
    if hit.n is not None:
        meta["n"] = hit.n
    kwargs: dict = {"text": hit.text or "", "metadata": meta}
    if hit.node_id:
        kwargs["id_"] = hit.node_id
    if hit.modality == "image":
        return ImageNode(image_path=hit.image_path, **kwargs)
    return TextNode(**kwargs)


def hit_to_scored_node(hit: Hit) -> Any:
    """`hit_to_node` with the hit's score: a NodeWithScore."""
    from llama_index.core.schema import NodeWithScore

    return NodeWithScore(node=hit_to_node(hit), score=hit.score)
