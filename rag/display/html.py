"""Show hits, answers and collections in Jupyter: small, self-contained HTML, no IPython needed.

Every helper returns an `HtmlView`: a string of HTML with `_repr_html_`, so the last
expression of a notebook cell renders it, `IPython.display.display(view)` works, and
`str(view)` is the HTML itself (for a web page, a file, or a test). Images are embedded as
base64 JPEG/PNG thumbnails (at most `MAX_THUMB_SIDE` px a side, so a grid stays small
enough to keep in a notebook); text from the corpus is always HTML-escaped; only http(s)
URLs become links. The views take `rag.types.Hit`s, their dicts, LlamaIndex nodes, image
paths or (path, caption) pairs (see `rag.display.items.to_hit`).

    from rag.display.html import image_grid, passage_list, hits_view, answer_view, collection_summary

    hits = retriever.search("what does the astronaut wear?", image="astronaut.png")
    hits_view(hits, query="what does the astronaut wear?")   # passages, then an image grid
    answer_view(engine.ask("..."))                            # answer, [n] links, thumbnails
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from rag.display.answer import answer_view, linked_citations, prompt_view  # noqa: F401 (re-exported)
from rag.display.base import (  # noqa: F401 (re-exported)
    DEFAULT_MAX_IMAGES,
    DEFAULT_THUMB_SIDE,
    MAX_THUMB_BYTES,
    MAX_THUMB_SIDE,
    MIN_THUMB_SIDE,
    STOPWORDS,
    HtmlView,
    Thumbnail,
    clamp_side,
    esc,
    excerpt,
    fmt_score,
    highlight,
    img_tag,
    link,
    query_terms,
    safe_url,
    thumbnail,
)
from rag.display.items import to_hit
from rag.types import Hit


def _caption(item: Hit, show_scores: bool) -> str:
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
    images = [i for i in map(to_hit, items) if i.modality == "image"]
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
    passages = [i for i in map(to_hit, items) if i.modality != "image"]
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
    passages = [h for h in hits if to_hit(h).modality != "image"]
    images = [h for h in hits if to_hit(h).modality == "image"]
    view = HtmlView("")
    if passages or not images:
        view = view + passage_list(passages, query, max_chars=max_chars, title=f"Passages ({len(passages)})")
    if images or not passages:
        view = view + image_grid(images, thumb_side=thumb_side, title=f"Images ({len(images)})")
    return view


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
        item = to_hit(node)
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
