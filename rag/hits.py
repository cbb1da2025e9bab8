"""Typed retrieval results shared by the retriever, the query engine, the CLI and notebooks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

Modality = Literal["text", "image"]


@dataclass
class Hit:
    """One retrieved passage or image.

    `source` is what a person would cite: the article URL when known, else the file path.
    """

    modality: Modality
    score: float
    node_id: str
    source: str
    title: Optional[str] = None
    url: Optional[str] = None
    file: Optional[str] = None
    text: Optional[str] = None  # the passage (text hits) or the caption (image hits)
    image_path: Optional[str] = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what `rag search --json` prints)."""
        data = asdict(self)
        if self.modality == "text":
            data.pop("image_path")
        return data
