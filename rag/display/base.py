"""The pieces every view is made of: `HtmlView`, escaping and links, thumbnails, highlights.

Everything here is pure string building except `thumbnail`, which encodes image files
through `rag.media.encode` (the same helper the query engine uses for the images it sends).
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from rag.errors import RagError
from rag.media.encode import EncodedImage, encode_image

DEFAULT_THUMB_SIDE = 160
MAX_THUMB_SIDE = 512
MIN_THUMB_SIDE = 16
DEFAULT_MAX_IMAGES = 24
MAX_THUMB_BYTES = 96_000  # a thumbnail is re-encoded smaller until it fits
_JPEG_QUALITIES = (80, 65, 50, 35)

# Words too common to be worth highlighting in a passage.
STOPWORDS = frozenset(
    "a an and are as at be but by can did do does for from had has have how i in into is it its "
    "me my of on or that the their them then there these they this those to was we were what "
    "when where which who whom why will with you your about also been than".split()
)

_STYLE = (
    "<style>"
    ".rag-view{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:14px;line-height:1.45}"
    ".rag-view .rag-muted{color:#666;font-size:12px}"
    ".rag-grid{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0}"
    ".rag-grid figure{margin:0;text-align:center}"
    ".rag-grid img{border-radius:4px;object-fit:contain;background:#f3f3f3}"
    ".rag-grid figcaption{font-size:12px;overflow-wrap:anywhere}"
    ".rag-missing{display:flex;align-items:center;justify-content:center;background:#eee;color:#888;"
    "font-size:11px;border-radius:4px}"
    ".rag-passages{margin:6px 0;padding-left:1.6em}"
    ".rag-passages li{margin-bottom:8px}"
    ".rag-passages mark{background:#fff2a8;color:#000;padding:0 1px}"
    ".rag-score{font-family:ui-monospace,monospace;font-size:12px;color:#555}"
    ".rag-table{border-collapse:collapse;margin:6px 0}"
    ".rag-table th,.rag-table td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}"
    ".rag-prompt{white-space:pre-wrap;background:#f7f7f7;color:#222;border:1px solid #e3e3e3;border-radius:4px;"
    "padding:8px;font-family:ui-monospace,monospace;font-size:12px}"
    ".rag-prompt img{vertical-align:top;margin:2px 0}"
    ".rag-answer{margin:6px 0}"
    ".rag-sources li{margin-bottom:6px}"
    ".rag-uncited{opacity:.6}"
    "</style>"
)


class HtmlView:
    """HTML to show: `_repr_html_` for Jupyter, `str()` for everything else."""

    def __init__(self, body: str, summary: str = "") -> None:
        self.body = body
        self.summary = summary

    @property
    def html(self) -> str:
        return f'<div class="rag-view">{_STYLE}{self.body}</div>'

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.summary}>" if self.summary else f"<{type(self).__name__}>"

    def save(self, path: Union[str, Path]) -> Path:
        """Write a standalone HTML page (images are inline: the file is self-contained)."""
        target = Path(path)
        target.write_text(f'<!doctype html>\n<html><head><meta charset="utf-8"><title>rag</title></head>'
                          f"<body>{self.html}</body></html>\n", encoding="utf-8")
        return target

    def __add__(self, other: "HtmlView") -> "HtmlView":
        summary = "; ".join(s for s in (self.summary, other.summary) if s)
        return HtmlView(self.body + other.body, summary)


# --------------------------------------------------------------------------- small pieces


def esc(value: Any) -> str:
    """HTML-escape any value (quotes too, so the result is safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def safe_url(url: Any) -> Optional[str]:
    """The URL if it is http(s), else None (no javascript:, data: or file: links)."""
    if not isinstance(url, str):
        return None
    text = url.strip()
    return text if re.match(r"(?i)^https?://[^\s]+$", text) else None


def link(text: Any, url: Any) -> str:
    """`<a href=url>text</a>` for http(s) URLs, the escaped text otherwise."""
    target = safe_url(url)
    if target is None:
        return esc(text)
    return f'<a href="{esc(target)}" target="_blank" rel="noopener noreferrer">{esc(text)}</a>'


def fmt_score(score: Optional[float]) -> str:
    """A score with three decimals ("" when there is none)."""
    return "" if score is None else f"{score:.3f}"


def clamp_side(side: int) -> int:
    """A thumbnail side within MIN_THUMB_SIDE..MAX_THUMB_SIDE."""
    return max(MIN_THUMB_SIDE, min(MAX_THUMB_SIDE, int(side)))


Thumbnail = EncodedImage  # a small image: `.data_url`, `.width`, `.height`


def thumbnail(path: Union[str, Path], side: int = DEFAULT_THUMB_SIDE) -> Optional[Thumbnail]:
    """A thumbnail of an image file (at most `side` px a side, clamped to 16..512, at most
    MAX_THUMB_BYTES), or None when the file is missing or unreadable. Cached per file version."""
    try:
        return encode_image(path, clamp_side(side), max_bytes=MAX_THUMB_BYTES, qualities=_JPEG_QUALITIES,
                            draft=True)
    except RagError:  # missing, unreadable, not an image, too large: shown as a placeholder
        return None


def img_tag(path: Any, side: int = DEFAULT_THUMB_SIDE, alt: str = "") -> str:
    """An <img> with the thumbnail inlined, or a grey placeholder naming the problem."""
    side = clamp_side(side)
    thumb = thumbnail(path, side) if path else None
    if thumb is None:
        return (f'<div class="rag-missing" style="width:{side}px;height:{side}px" '
                f'title="{esc(path)}">image unavailable</div>')
    return (f'<img src="{thumb.data_url}" width="{thumb.width}" height="{thumb.height}" '
            f'alt="{esc(alt)}" title="{esc(alt)}">')



# --------------------------------------------------------------------------- highlights


def query_terms(query: Optional[str]) -> List[str]:
    """Words of a query worth highlighting: no stopwords, no one-letter words, no repeats."""
    words = re.findall(r"\w+", (query or "").lower())
    return list(dict.fromkeys(w for w in words if len(w) > 1 and w not in STOPWORDS))


def highlight(text: Optional[str], terms: Sequence[str]) -> str:
    """Escape `text` and wrap each word starting with a query term in <mark>.

    Matching runs on the raw text and every piece is escaped on its own, so markup in a
    passage is shown as text and can never open or close a tag.
    """
    text = text or ""
    if not terms:
        return esc(text)
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    pattern = re.compile(rf"\b(?:{alternatives})\w*", re.IGNORECASE)
    out, last = [], 0
    for match in pattern.finditer(text):
        out.append(esc(text[last:match.start()]))
        out.append(f"<mark>{esc(match.group(0))}</mark>")
        last = match.end()
    out.append(esc(text[last:]))
    return "".join(out)


def excerpt(text: Optional[str], terms: Sequence[str], max_chars: int) -> str:
    """At most `max_chars` of text (on word boundaries), starting near the first query term."""
    text = " ".join((text or "").split())
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    start = 0
    if terms:
        alternatives = "|".join(re.escape(t) for t in terms)
        first = re.search(rf"\b(?:{alternatives})", text, re.IGNORECASE)
        if first and first.start() > max_chars // 2:
            start = text.rfind(" ", 0, max(0, first.start() - max_chars // 4)) + 1
    end = start + max_chars
    if end < len(text):
        cut = text.rfind(" ", start, end)
        end = cut if cut > start else end
    return ("… " if start else "") + text[start:end].rstrip() + (" …" if end < len(text) else "")
