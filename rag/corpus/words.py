"""The words a picture carries (pure): what lexical and caption signals read for an image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List, Mapping, Optional

# Metadata fields whose text describes an image, in the order they are joined.
WORD_FIELDS = ("title", "caption", "alt", "description")


def image_words(metadata: Mapping[str, Any], path: Optional[str] = None) -> str:
    """The words an image carries: its article title, caption, alt text, description, file name."""
    parts = [str(metadata[k]).strip().rstrip(".").strip() for k in WORD_FIELDS if metadata.get(k)]
    file = path or metadata.get("file_path") or metadata.get("file_name")
    if file:
        stem = re.sub(r"[-_.]+", " ", Path(str(file)).stem).strip()
        if stem and not stem.isdigit():
            parts.append(stem)
    seen: List[str] = []
    for part in parts:
        if part and part not in seen:
            seen.append(part)
    return ". ".join(seen)


def article_key(metadata: Mapping[str, Any]) -> Optional[str]:
    """What ties a passage and an image to one article: its URL, else its title."""
    return metadata.get("url") or metadata.get("title") or None
