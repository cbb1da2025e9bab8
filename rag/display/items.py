"""What the views accept, as one type: everything becomes a `rag.types.Hit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rag.types import Hit


def _image(path: Any, title: Any = None) -> Hit:
    where = str(path)
    return Hit("image", None, "", where, title=Path(where).name if title is None else str(title),  # type: ignore[arg-type]
               image_path=where)


def to_hit(obj: Any) -> Hit:
    """A Hit from a Hit, its dict form, a LlamaIndex node or NodeWithScore, an image path,
    or an (image path, caption) pair."""
    if isinstance(obj, Hit):
        return obj
    if isinstance(obj, (str, Path)):
        return _image(obj)
    if isinstance(obj, tuple) and obj:
        return _image(obj[0], obj[1] if len(obj) > 1 else None)
    if isinstance(obj, Mapping):
        image_path = obj.get("image_path")
        modality = obj.get("modality") or ("image" if image_path else "text")
        return Hit.from_dict({"score": None, "node_id": "", **obj, "modality": modality,
                              "source": obj.get("source") or image_path or ""})
    if hasattr(obj, "metadata") or hasattr(getattr(obj, "node", None), "metadata"):
        from rag.search.nodes import node_to_hit

        return node_to_hit(obj)
    raise TypeError(
        "expected a Hit, a dict, a LlamaIndex node, an image path or an (image path, caption) pair; "
        f"got {type(obj).__name__}"
    )
