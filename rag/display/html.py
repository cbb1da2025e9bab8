"""Show hits, answers and collections in Jupyter: small, self-contained HTML, no IPython needed.

Every helper returns an `HtmlView`: a string of HTML with `_repr_html_`, so the last
expression of a notebook cell renders it, `IPython.display.display(view)` works, and
`str(view)` is the HTML itself (for a web page, a file, or a test). Images are embedded as
base64 JPEG/PNG thumbnails (at most `MAX_THUMB_SIDE` px a side, so a grid stays small
enough to keep in a notebook); text from the corpus is always HTML-escaped; only http(s)
URLs become links.

    from rag.display.html import image_grid, passage_list, hits_view, answer_view, collection_summary

    hits = retriever.search("what does the astronaut wear?", image="astronaut.png")
    hits_view(hits, query="what does the astronaut wear?")   # passages, then an image grid
    answer_view(engine.ask("..."))                            # answer, [n] links, thumbnails
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

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
    return "" if score is None else f"{score:.3f}"


def clamp_side(side: int) -> int:
    return max(MIN_THUMB_SIDE, min(MAX_THUMB_SIDE, int(side)))


@dataclass(frozen=True)
class Thumbnail:
    """A small image as a data: URL."""

    data_url: str
    width: int
    height: int


def thumbnail(path: Union[str, Path], side: int = DEFAULT_THUMB_SIDE) -> Optional[Thumbnail]:
    """A thumbnail of an image file (at most `side` px a side, clamped to 16..512), or None
    when the file is missing or unreadable. Cached per file version."""
    p = Path(path)
    try:
        stat = p.stat()
    except (OSError, ValueError):
        return None
    if not p.is_file():
        return None
    return _thumbnail_cached(str(p), stat.st_mtime_ns, stat.st_size, clamp_side(side))


@functools.lru_cache(maxsize=512)
def _thumbnail_cached(path: str, _mtime: int, _size: int, side: int) -> Optional[Thumbnail]:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft(img.mode, (side * 2, side * 2))  # JPEG: decode at a reduced scale
            img = ImageOps.exif_transpose(img)
            img.thumbnail((side, side))
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            if has_alpha:
                data, mime = _encode(img.convert("RGBA"), "PNG"), "image/png"
                if len(data) > MAX_THUMB_BYTES:  # flatten onto white and fall back to JPEG
                    flat = Image.new("RGB", img.size, (255, 255, 255))
                    flat.paste(img.convert("RGBA"), mask=img.convert("RGBA").split()[-1])
                    img, has_alpha = flat, False
            if not has_alpha:
                rgb = img.convert("RGB")
                for quality in _JPEG_QUALITIES:
                    data = _encode(rgb, "JPEG", quality=quality)
                    if len(data) <= MAX_THUMB_BYTES:
                        break
                mime = "image/jpeg"
            width, height = img.size
    except Exception:  # unreadable, truncated, not an image: shown as a placeholder
        return None
    if len(data) > MAX_THUMB_BYTES:
        return None
    return Thumbnail(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", width, height)


def _encode(img: Any, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, optimize=True, **kwargs)
    return buf.getvalue()


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


# --------------------------------------------------------------------------- items


@dataclass
class _Item:
    """What the helpers need of a hit, a numbered source, a node or a plain path."""

    modality: str
    title: Optional[str] = None
    url: Optional[str] = None
    text: Optional[str] = None
    image_path: Optional[str] = None
    score: Optional[float] = None
    n: Optional[int] = None
    source: Optional[str] = None


def _item(obj: Any) -> _Item:
    """Accept Hit, answer Source, NodeWithScore, a LlamaIndex node, a path, (path, caption) or a dict."""
    if isinstance(obj, _Item):
        return obj
    if isinstance(obj, (str, Path)):
        return _Item("image", title=Path(obj).name, image_path=str(obj))
    if isinstance(obj, tuple):
        path, caption = (obj + (None,))[:2]
        return _Item("image", title=caption if caption is not None else Path(path).name, image_path=str(path))
    if isinstance(obj, Mapping):
        data = dict(obj)
        return _Item(
            modality=data.get("modality") or ("image" if data.get("image_path") else "text"),
            title=data.get("title"), url=data.get("url"), text=data.get("text"),
            image_path=data.get("image_path"), score=data.get("score"), n=data.get("n"),
            source=data.get("source"),
        )
    score = getattr(obj, "score", None)
    node = getattr(obj, "node", None)
    if node is not None and hasattr(node, "metadata"):  # NodeWithScore
        obj = node
    metadata = getattr(obj, "metadata", None) or {}
    image_path = getattr(obj, "image_path", None)
    modality = getattr(obj, "modality", None) or metadata.get("modality") or ("image" if image_path else "text")
    title = getattr(obj, "title", None) or metadata.get("title")
    url = getattr(obj, "url", None) or metadata.get("url")
    text = getattr(obj, "text", None)
    if modality == "image":
        text = metadata.get("caption") or text
        image_path = image_path or metadata.get("file_path")
    n = getattr(obj, "n", None) if not isinstance(getattr(obj, "n", None), bool) else None
    return _Item(modality, title, url, text, image_path, score, n if n is not None else metadata.get("n"),
                 getattr(obj, "source", None) or metadata.get("source") or metadata.get("file_path"))


def _caption(item: _Item, show_scores: bool) -> str:
    name = item.title or (Path(item.image_path).name if item.image_path else "image")
    head = f"[{item.n}] " if item.n is not None else ""
    lines = [head + link(name, item.url)]
    if show_scores and item.score is not None:
        lines.append(f'<span class="rag-score">score {fmt_score(item.score)}</span>')
    if item.text and item.text != name:
        lines.append(f'<span class="rag-muted">{esc(excerpt(item.text, (), 90))}</span>')
    return "<br>".join(lines)


# --------------------------------------------------------------------------- views


def image_grid(
    items: Iterable[Any],
    *,
    thumb_side: int = DEFAULT_THUMB_SIDE,
    max_images: int = DEFAULT_MAX_IMAGES,
    show_scores: bool = True,
    title: Optional[str] = None,
) -> HtmlView:
    """A grid of thumbnails captioned with title (linked), score and caption.

    `items`: image hits, numbered sources, image nodes, paths or (path, caption) pairs;
    text hits among them are ignored. At most `max_images` are embedded, each at most
    `thumb_side` px a side (clamped to 16..512), so the HTML stays small.
    """
    side = clamp_side(thumb_side)
    images = [i for i in map(_item, items) if i.modality == "image"]
    shown = images[: max(0, max_images)]
    figures = [
        f'<figure style="width:{side}px">{img_tag(i.image_path, side, i.title or "")}'
        f"<figcaption>{_caption(i, show_scores)}</figcaption></figure>"
        for i in shown
    ]
    parts = [f"<h4>{esc(title)}</h4>"] if title else []
    if not images:
        parts.append('<p class="rag-muted">No images.</p>')
    else:
        parts.append(f'<div class="rag-grid">{"".join(figures)}</div>')
        if len(images) > len(shown):
            parts.append(f'<p class="rag-muted">… and {len(images) - len(shown)} more images not shown.</p>')
    return HtmlView("".join(parts), f"{len(shown)} of {len(images)} images")


def passage_list(
    items: Iterable[Any],
    query: Optional[str] = None,
    *,
    max_chars: int = 600,
    show_scores: bool = True,
    title: Optional[str] = None,
) -> HtmlView:
    """Passages as a numbered list: title (linked), score, and the text with the words of
    `query` highlighted (everything escaped). Image items are ignored."""
    terms = query_terms(query)
    passages = [i for i in map(_item, items) if i.modality != "image"]
    rows = []
    for item in passages:
        head = link(item.title or item.source or "passage", item.url)
        score = f' <span class="rag-score">score {fmt_score(item.score)}</span>' if show_scores and item.score is not None else ""
        number = f"[{item.n}] " if item.n is not None else ""
        body = highlight(excerpt(item.text, terms, max_chars), terms)
        rows.append(f"<li><b>{number}{head}</b>{score}<br>{body}</li>")
    parts = [f"<h4>{esc(title)}</h4>"] if title else []
    parts.append(f'<ol class="rag-passages">{"".join(rows)}</ol>' if rows else '<p class="rag-muted">No passages.</p>')
    return HtmlView("".join(parts), f"{len(passages)} passages")


def hits_view(hits: Sequence[Any], query: Optional[str] = None, *, thumb_side: int = DEFAULT_THUMB_SIDE,
              max_chars: int = 600) -> HtmlView:
    """Search results: the passages (highlighted), then the images as a grid."""
    hits = list(hits)
    passages = [h for h in hits if _item(h).modality != "image"]
    images = [h for h in hits if _item(h).modality == "image"]
    view = HtmlView("")
    if passages or not images:
        view = view + passage_list(passages, query, max_chars=max_chars, title=f"Passages ({len(passages)})")
    if images or not passages:
        view = view + image_grid(images, thumb_side=thumb_side, title=f"Images ({len(images)})")
    return view


_CITE = re.compile(r"\[(\d+(?:\s*[,;\-–]\s*\d+)*)\]")
_PLACEHOLDER = re.compile(r"<(image \[(\d+)\]|question image): ([^\n>]+)>")


def _linked_citations(text: str, sources: Mapping[int, _Item], anchor: str) -> str:
    """Escape an answer and turn each [n] that names a source into a link to it."""
    out, last = [], 0
    for match in _CITE.finditer(text):
        out.append(esc(text[last:match.start()]))
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        if all(n in sources for n in numbers):
            links = ", ".join(f'<a href="#{anchor}-{n}">{n}</a>' for n in numbers)
            out.append(f"[{links}]")
        else:
            out.append(esc(match.group(0)))
        last = match.end()
    out.append(esc(text[last:]))
    return "".join(out).replace("\n", "<br>")


def prompt_view(prompt: str, *, thumb_side: int = 128) -> HtmlView:
    """A rendered prompt (`Answer.prompt`) with its `<image [n]: path>` parts shown as images."""
    out, last, images = [], 0, 0
    for match in _PLACEHOLDER.finditer(prompt or ""):
        out.append(esc(prompt[last:match.start()]))
        label = f"image [{match.group(2)}]" if match.group(2) else "question image"
        out.append(f'<span class="rag-muted">&lt;{esc(label)}&gt;</span><br>{img_tag(match.group(3), thumb_side, label)}')
        images += 1
        last = match.end()
    out.append(esc((prompt or "")[last:]))
    return HtmlView(f'<div class="rag-prompt">{"".join(out)}</div>', f"prompt with {images} images")


def _answer_data(answer: Any) -> dict:
    if hasattr(answer, "get_answer"):  # an AnswerStream: consume what is left
        answer = answer.get_answer()
    if hasattr(answer, "to_dict"):  # rag.answer.Answer
        return answer.to_dict()
    metadata = getattr(answer, "metadata", None)
    if isinstance(metadata, Mapping) and "sources" in metadata:  # a LlamaIndex Response from RagQueryEngine
        return dict(metadata)
    if isinstance(answer, Mapping):
        return dict(answer)
    raise TypeError(f"answer_view() takes an Answer, its to_dict(), an AnswerStream or a Response from "
                    f"RagQueryEngine; got {type(answer).__name__}")


def answer_view(answer: Any, *, thumb_side: int = 96, show_prompt: bool = True) -> HtmlView:
    """An answer: the text with [n] linked to the numbered sources below it (titles linked
    to their URLs, images as thumbnails). Without an LLM (`answer.answer is None`) it shows
    the prompt that would be sent, images included.

    `answer`: a `rag.answer.Answer`, its `to_dict()`, an `AnswerStream` (consumed), or the
    `Response` of `RagQueryEngine.query()`."""
    data = _answer_data(answer)
    sources = {int(s["n"]): _item(s) for s in data.get("sources", [])}
    cited = {int(s["n"]) for s in data.get("cited", [])}
    key = f"{data.get('question')}\x00{data.get('answer')}\x00{data.get('prompt')}"
    anchor = "rag-src-" + hashlib.sha1(key.encode("utf-8", "replace")).hexdigest()[:8]
    parts = [f'<p><b>Question:</b> {esc(data.get("question"))}</p>']
    if data.get("image"):
        parts.append(img_tag(data["image"], thumb_side * 2, "question image"))
    text = data.get("answer")
    llm = data.get("llm") or {}
    if text is None:
        parts.append('<p class="rag-muted">No LLM was called (RAG_LLM=none). The prompt that would be sent:</p>')
        if show_prompt and data.get("prompt"):
            parts.append(prompt_view(data["prompt"]).body)
    else:
        model = " ".join(str(v) for v in (llm.get("backend"), llm.get("model")) if v)
        parts.append(f'<div class="rag-answer">{_linked_citations(text, sources, anchor)}</div>')
        if model:
            parts.append(f'<p class="rag-muted">Answered by {esc(model)}'
                         f'{" (images sent)" if data.get("vision") else ""}.</p>')
    for note in data.get("notes") or []:
        parts.append(f'<p class="rag-muted">Note: {esc(note)}</p>')
    if data.get("unknown_citations"):
        numbers = ", ".join(str(n) for n in data["unknown_citations"])
        parts.append(f'<p class="rag-muted">Cited numbers that match no source: {esc(numbers)}</p>')
    rows = []
    for n, item in sorted(sources.items()):
        mark = "" if text is None or n in cited else ' class="rag-uncited"'
        flag = "" if text is None or n in cited else ' <span class="rag-muted">(not cited)</span>'
        name = link(item.title or item.source or f"source {n}", item.url)
        score = f' <span class="rag-score">{fmt_score(item.score)}</span>' if item.score is not None else ""
        if item.modality == "image":
            body = f"<br>{img_tag(item.image_path, thumb_side, item.title or '')}"
            if item.text:
                body += f'<br><span class="rag-muted">{esc(excerpt(item.text, (), 120))}</span>'
        else:
            body = f'<br><span class="rag-muted">{esc(excerpt(item.text, (), 200))}</span>'
        rows.append(f'<li id="{anchor}-{n}"{mark} value="{n}"><b>{"image: " if item.modality == "image" else ""}'
                    f"{name}</b>{score}{flag}{body}</li>")
    parts.append("<h4>Sources</h4>")
    parts.append(f'<ol class="rag-sources">{"".join(rows)}</ol>' if rows else '<p class="rag-muted">No sources found.</p>')
    summary = f"{len(sources)} sources, {len(cited)} cited" if text is not None else f"{len(sources)} sources, no LLM"
    return HtmlView("".join(parts), summary)


def collection_summary(index_or_info: Any) -> HtmlView:
    """A table of the index: storage, store kind, and for each collection its name, points
    and model. Takes a `RagIndex` (calls `.info()`, loads no model) or the info dict."""
    info = index_or_info.info() if hasattr(index_or_info, "info") else dict(index_or_info)
    rows = []
    for kind, collection in info.get("collections", {}).items():
        rows.append(
            f"<tr><td>{esc(kind)}</td><td>{esc(collection.get('name'))}</td>"
            f"<td style=\"text-align:right\">{esc(collection.get('points'))}</td>"
            f"<td>{esc(info.get('models', {}).get(kind))}</td></tr>"
        )
    table = (
        '<table class="rag-table"><thead><tr><th>collection</th><th>name</th><th>points</th><th>model</th>'
        f'</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    where = f"{info.get('store', '?')}: {info.get('location', info.get('storage', '?'))}"
    foot = (f'<p class="rag-muted">Storage {esc(info.get("storage"))} ({esc(where)}); '
            f'{esc(info.get("files", 0))} files indexed.</p>')
    points = sum(int(c.get("points") or 0) for c in info.get("collections", {}).values())
    return HtmlView(table + foot, f"{len(rows)} collections, {points} points")


def nodes_table(nodes: Iterable[Any], *, columns: Sequence[str] = ("title", "chunk", "file_name"),
                max_chars: int = 160, thumb_side: int = 64, limit: int = 20) -> HtmlView:
    """A few stored points as a table: id, chosen metadata columns, and the text (or a
    thumbnail for image nodes). `nodes`: what `store.get_nodes(limit=...)` returns."""
    nodes = list(nodes)
    shown = nodes[: max(0, limit)]
    head = "".join(f"<th>{esc(c)}</th>" for c in ("id", *columns, "content"))
    rows = []
    for node in shown:
        item = _item(node)
        meta = getattr(node, "metadata", None) or {}
        node_id = getattr(node, "node_id", None) or getattr(node, "id_", "")
        cells = [f'<td title="{esc(node_id)}"><code>{esc(str(node_id)[:8])}</code></td>']
        cells += [f"<td>{esc(meta.get(c, ''))}</td>" for c in columns]
        if item.modality == "image":
            content = img_tag(item.image_path, thumb_side, item.title or "")
            if item.text:
                content += f'<br><span class="rag-muted">{esc(excerpt(item.text, (), max_chars))}</span>'
        else:
            content = esc(excerpt(item.text, (), max_chars))
        cells.append(f"<td>{content}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    more = (f'<p class="rag-muted">{len(nodes) - len(shown)} more not shown.</p>' if len(nodes) > len(shown) else "")
    table = f'<table class="rag-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return HtmlView(table + more, f"{len(shown)} of {len(nodes)} points")


__all__ = [
    "HtmlView",
    "Thumbnail",
    "answer_view",
    "collection_summary",
    "esc",
    "highlight",
    "hits_view",
    "image_grid",
    "img_tag",
    "nodes_table",
    "passage_list",
    "prompt_view",
    "query_terms",
    "safe_url",
    "thumbnail",
]
