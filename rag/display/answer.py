"""Answers in a notebook: the text with its citations linked to the numbered sources, and
(without an LLM) the prompt that would be sent, drawn from its structured parts."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Mapping, Sequence, Union

from rag.answer.citations import find_citations
from rag.display.base import HtmlView, esc, excerpt, fmt_score, img_tag, link
from rag.display.items import to_hit
from rag.types import Answer, Hit

PromptLike = Union[str, Sequence[Mapping[str, Any]], Any]


def linked_citations(text: str, sources: Mapping[int, Hit], anchor: str) -> str:
    """Escape an answer and turn each citation whose numbers all name sources into links.

    Citations are read by `rag.answer.citations`, as the engine reads them: `[source 2]`
    links 2, `[1-3]` links 1, 2 and 3.
    """
    out, last = [], 0
    for citation in find_citations(text):
        out.append(esc(text[last:citation.start]))
        raw = text[citation.start:citation.end]
        if citation.numbers and all(n in sources for n in citation.numbers):
            out.append("[" + ", ".join(f'<a href="#{anchor}-{n}">{n}</a>' for n in citation.numbers) + "]")
        else:
            out.append(esc(raw))
        last = citation.end
    out.append(esc(text[last:]))
    return "".join(out).replace("\n", "<br>")


def _parts(prompt: PromptLike) -> List[Mapping[str, Any]]:
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [{"text": prompt}]
    if isinstance(prompt, Answer):
        return prompt.prompt_parts or _parts(prompt.prompt)
    if hasattr(prompt, "to_parts"):  # rag.answer.prompt.Prompt
        return prompt.to_parts()
    return list(prompt)


def prompt_view(prompt: PromptLike, *, thumb_side: int = 128) -> HtmlView:
    """A prompt with its images shown: `Answer.prompt_parts` (`{"text": ...}` and
    `{"image": path, "n": n}` parts), a `Prompt`, an `Answer`, or plain text (escaped)."""
    out, images = [], 0
    for part in _parts(prompt):
        if "image" in part:
            label = f"image [{part['n']}]" if part.get("n") is not None else "question image"
            out.append(f'<span class="rag-muted">&lt;{esc(label)}&gt;</span><br>'
                       f"{img_tag(part['image'], thumb_side, label)}\n")
            images += 1
        else:
            out.append(esc(part.get("text")))
    return HtmlView(f'<div class="rag-prompt">{"".join(out)}</div>', f"prompt with {images} images")


def _as_answer(obj: Any) -> Answer:
    if hasattr(obj, "get_answer"):  # an AnswerStream: consume what is left
        obj = obj.get_answer()
    if isinstance(obj, Answer):
        return obj
    metadata = getattr(obj, "metadata", None)
    if isinstance(obj, Mapping):
        data: Any = obj
    elif isinstance(metadata, Mapping) and "sources" in metadata:  # a Response from RagQueryEngine
        data = metadata
    elif hasattr(obj, "to_dict"):
        data = obj.to_dict()
    else:
        data = None
    if not isinstance(data, Mapping):
        raise TypeError(f"answer_view() takes an Answer, its to_dict(), an AnswerStream or a Response from "
                        f"RagQueryEngine; got {type(obj).__name__}")
    answer = Answer.from_dict({**data, "sources": [], "cited": []})
    answer.sources = [to_hit(s) for s in data.get("sources") or []]
    answer.cited = [to_hit(s) for s in data.get("cited") or []]
    return answer


def _source_row(n: int, hit: Hit, anchor: str, cited: bool, thumb_side: int) -> str:
    mark = "" if cited else ' class="rag-uncited"'
    flag = "" if cited else ' <span class="rag-muted">(not cited)</span>'
    name = link(hit.title or hit.source or f"source {n}", hit.url)
    score = f' <span class="rag-score">{fmt_score(hit.score)}</span>' if hit.score is not None else ""
    if hit.modality == "image":
        body = f"<br>{img_tag(hit.image_path, thumb_side, hit.title or '')}"
        if hit.text:
            body += f'<br><span class="rag-muted">{esc(excerpt(hit.text, (), 120))}</span>'
    else:
        body = f'<br><span class="rag-muted">{esc(excerpt(hit.text, (), 200))}</span>'
    return (f'<li id="{anchor}-{n}"{mark} value="{n}"><b>{"image: " if hit.modality == "image" else ""}'
            f"{name}</b>{score}{flag}{body}</li>")


def answer_view(answer: Any, *, thumb_side: int = 96, show_prompt: bool = True) -> HtmlView:
    """An answer: the text with [n] linked to the numbered sources below it (titles linked
    to their URLs, images as thumbnails). Without an LLM (`answer.answer is None`) it shows
    the prompt that would be sent, images included.

    `answer`: a `rag.types.Answer`, its `to_dict()`, an `AnswerStream` (consumed), or the
    `Response` of `RagQueryEngine.query()`."""
    a = _as_answer(answer)
    sources: Dict[int, Hit] = {int(s.n): s for s in a.sources if s.n is not None}
    cited = {int(s.n) for s in a.cited if s.n is not None}
    key = f"{a.question}\x00{a.answer}\x00{a.prompt}"
    anchor = "rag-src-" + hashlib.sha1(key.encode("utf-8", "replace")).hexdigest()[:8]
    parts = [f"<p><b>Question:</b> {esc(a.question)}</p>"]
    if a.image:
        parts.append(img_tag(a.image, thumb_side * 2, "question image"))
    llm = a.llm or {}
    if a.answer is None:
        parts.append('<p class="rag-muted">No LLM was called (RAG_LLM=none). The prompt that would be sent:</p>')
        if show_prompt and (a.prompt_parts or a.prompt):
            parts.append(prompt_view(a).body)
    else:
        model = " ".join(str(v) for v in (llm.get("backend"), llm.get("model")) if v)
        parts.append(f'<div class="rag-answer">{linked_citations(a.answer, sources, anchor)}</div>')
        if model:
            parts.append(f'<p class="rag-muted">Answered by {esc(model)}{" (images sent)" if a.vision else ""}.</p>')
    parts += [f'<p class="rag-muted">Note: {esc(note)}</p>' for note in a.notes]
    if a.unknown_citations:
        numbers = ", ".join(str(n) for n in a.unknown_citations)
        parts.append(f'<p class="rag-muted">Cited numbers that match no source: {esc(numbers)}</p>')
    rows = [_source_row(n, hit, anchor, a.answer is None or n in cited, thumb_side) for n, hit in sorted(sources.items())]
    parts.append("<h4>Sources</h4>")
    parts.append(f'<ol class="rag-sources">{"".join(rows)}</ol>' if rows else '<p class="rag-muted">No sources found.</p>')
    summary = f"{len(sources)} sources, {len(cited)} cited" if a.answer is not None else f"{len(sources)} sources, no LLM"
    return HtmlView("".join(parts), summary)
