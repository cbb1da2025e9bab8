"""Pure text shaping for the fetcher: safe file names, article Markdown, HTML snippets."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from html.parser import HTMLParser
from typing import Any, Optional

_RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)
_PATH_CHARS = re.compile(r'[/\\:*?"<>|]')


def safe_name(text: str, max_bytes: int = 100, fallback: str = "untitled") -> str:
    """A file or folder name for `text` that is safe on Linux, macOS and Windows.

    No path separators, no control or format characters, no leading dots (so never `.`,
    `..` or a hidden file), no trailing dots or spaces, no reserved device names, at most
    `max_bytes` UTF-8 bytes. Spaces become underscores, as in Wikipedia URLs. Whenever the
    mapping loses information (characters replaced, name truncated) a short hash of the
    original is appended, so that "AC/DC" and "AC DC" never share a folder.
    """
    original = text
    text = unicodedata.normalize("NFC", text)
    text = "".join("_" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") else ch for ch in text)
    text = _PATH_CHARS.sub("_", text)
    text = re.sub(r"\s+", "_", text)
    text = re.sub(r"_{2,}", "_", text).strip("._ ")
    lossy = text != unicodedata.normalize("NFC", original).replace(" ", "_")
    if not text:
        text, lossy = fallback, True
    if text.split(".")[0].lower() in _RESERVED_NAMES:
        text, lossy = "_" + text, True
    if lossy or len(text.encode("utf-8")) > max_bytes:
        digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        head = text.encode("utf-8")[: max(1, max_bytes - 9)].decode("utf-8", "ignore").rstrip("._ ")
        text = f"{head or fallback}-{digest}"
    return text


def article_markdown(title: str, extract: str) -> str:
    """The article file: `# Title`, then the plain text with `== H ==` turned into `## H`.

    Sections left empty by the plain-text extract (References, External links, ...) are dropped.
    """
    lines = extract.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    pending: list[str] = []  # headings waiting for body text before they are written
    for line in lines:
        match = re.match(r"^(={2,6})\s*(.*?)\s*\1\s*$", line)
        if match:
            level = len(match.group(1))
            pending = [h for h in pending if h.count("#", 0, h.index(" ")) < level]
            pending.append("#" * level + " " + match.group(2))
            continue
        if line.strip() and pending:
            if out and out[-1].strip():
                out.append("")
            for heading in pending:
                out.extend([heading, ""])
            pending = []
        out.append(line.rstrip())
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
    heading = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in title).strip()
    return f"# {heading}\n\n{body}\n" if body else f"# {heading}\n"


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("br", "p", "li", "div"):
            self.parts.append(" ")


def html_to_text(html: Optional[str], limit: int = 0) -> str:
    """Plain text from the small HTML snippets in `extmetadata` (author links, descriptions)."""
    if not html:
        return ""
    parser = _TextOnly()
    parser.feed(str(html))
    parser.close()
    text = re.sub(r"\s+", " ", "".join(parser.parts)).strip()
    if limit and len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return text
