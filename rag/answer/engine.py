"""The query engine: retrieved passages and images -> prompt -> LLM -> answer with citations.

Pure parts first (tests call them without a model or a server):

- `number_sources(hits)` numbers every passage and image as a source [1], [2], ...
- `build_prompt(question, sources, question_image=..., vision=...)` assembles the chat
  messages: passages with their titles; images as image parts for vision models (resized to
  at most 768 px a side, base64-encoded once), or as captions for text-only models. Nothing
  is formatted with str.format, so passages with braces pass through as they are and no
  template placeholder (such as `{context_str}`) can leak into the prompt.
- `parse_citations(text, sources)` maps `[n]` in an answer to the sources.

Then `RagQueryEngine`, a LlamaIndex query engine over a retriever and an LLM (or none: with
no LLM it never calls a model and never falls back to OpenAI; the answer holds the sources
and the exact prompt that would be sent).
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Sequence, Union

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode

from rag.errors import RagError
from rag.types import Hit
from rag.answer.llms import (
    DEFAULT_MAX_IMAGE_SIDE,
    ImagesRefusedError,
    LLMSpec,
    build_llm,
    llm_error,
    resolve_llm,
    spec_for_llm,
)

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources you are given: text passages "
    "and images. After each statement, cite the sources that support it with their numbers "
    "in square brackets, like [1] or [2][3]. Say what an image shows only when you can see "
    "it or its caption says so. If the sources do not contain the answer, say that you do "
    "not know. Never cite a number that is not a source."
)
NO_LLM_MESSAGE = (
    "No LLM is configured (RAG_LLM=none), so no model was called. The retrieved sources are "
    "in source_nodes and the prompt that would be sent is in metadata['prompt']."
)


# --------------------------------------------------------------------------- sources


@dataclass
class Source:
    """One numbered source: a passage or an image the model may cite as [n]."""

    n: int
    modality: str  # "text" | "image"
    source: str
    title: Optional[str] = None
    url: Optional[str] = None
    text: Optional[str] = None  # passage, or image caption
    image_path: Optional[str] = None
    score: Optional[float] = None
    node_id: Optional[str] = None

    @classmethod
    def from_hit(cls, n: int, hit: Hit) -> "Source":
        return cls(
            n=n,
            modality=hit.modality,
            source=hit.source,
            title=hit.title,
            url=hit.url,
            text=hit.text,
            image_path=hit.image_path,
            score=hit.score,
            node_id=hit.node_id,
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "n": self.n,
            "modality": self.modality,
            "source": self.source,
            "title": self.title,
            "url": self.url,
            "text": self.text,
            "score": self.score,
            "node_id": self.node_id,
        }
        if self.modality == "image":
            data["image_path"] = self.image_path
        return data

    def label(self) -> str:
        """One line for a Sources list: `Title - url-or-path` (image: the image file)."""
        name = self.title or self.source
        where = self.image_path if self.modality == "image" else (self.url or self.source)
        kind = "image: " if self.modality == "image" else ""
        return f"{kind}{name} - {where}" if where and where != name else f"{kind}{name}"


def number_sources(hits: Sequence[Hit]) -> list[Source]:
    """Number hits 1..N in the order given, dropping repeats of the same node."""
    out: list[Source] = []
    seen: set[str] = set()
    for hit in hits:
        key = hit.node_id or f"{hit.modality}:{hit.source}:{hit.image_path}:{hit.text}"
        if key in seen:
            continue
        seen.add(key)
        out.append(Source.from_hit(len(out) + 1, hit))
    return out


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class EncodedImage:
    """An image ready to send: resized, compressed and base64-encoded (once)."""

    path: str
    mime: str
    b64: str
    width: int
    height: int

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.b64}"


class ImageUnusable(RagError):
    """An image file cannot be read or is too large to send."""


def encode_image(
    path: PathLike, max_side: int = DEFAULT_MAX_IMAGE_SIDE, max_pixels: int = 64_000_000
) -> EncodedImage:
    """Read an image, shrink it to at most `max_side` px a side, and base64-encode it.

    Photos become JPEG (quality 85); images with transparency stay PNG. The result is cached
    per file version, so an image is encoded once however often it is sent.
    """
    p = Path(path)
    try:
        stat = p.stat()
    except OSError as exc:
        raise ImageUnusable(f"Cannot read image {p}: {exc.strerror or exc}") from None
    return _encode_cached(str(p), stat.st_mtime_ns, stat.st_size, int(max_side), int(max_pixels))


@functools.lru_cache(maxsize=128)
def _encode_cached(path: str, _mtime: int, _size: int, max_side: int, max_pixels: int) -> EncodedImage:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                raise ImageUnusable(
                    f"Image {path} has {img.width}x{img.height} pixels, above the limit of "
                    f"{max_pixels} (RAG_MAX_IMAGE_PIXELS)."
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (
                img.mode == "P" and "transparency" in img.info
            )
            if max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            if has_alpha:
                img.convert("RGBA").save(buf, format="PNG", optimize=True)
                mime = "image/png"
            else:
                img.convert("RGB").save(buf, format="JPEG", quality=85)
                mime = "image/jpeg"
            width, height = img.size
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageUnusable(f"Cannot read image {path}: {exc}") from None
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    return EncodedImage(path=path, mime=mime, b64=b64, width=width, height=height)


# --------------------------------------------------------------------------- prompt


@dataclass
class ImagePart:
    """An image in the prompt: a numbered source (n) or the image given with the question."""

    path: str
    n: Optional[int] = None  # None: the question's own image
    encoded: Optional[EncodedImage] = None

    def placeholder(self) -> str:
        who = f"image [{self.n}]" if self.n is not None else "question image"
        return f"<{who}: {self.path}>"


Part = Union[str, ImagePart]


@dataclass
class Prompt:
    """The chat prompt: a system text and a user message made of text and image parts."""

    system: str
    parts: list[Part]
    vision: bool
    notes: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.parts if isinstance(p, ImagePart)]

    def user_text(self) -> str:
        """The user message as text, each image part shown as `<image [n]: path>`."""
        return "".join(p if isinstance(p, str) else p.placeholder() + "\n" for p in self.parts)

    def render(self) -> str:
        """The whole prompt as text: what `RAG_LLM=none` shows."""
        return f"### system\n{self.system}\n\n### user\n{self.user_text()}"

    def encode_images(self, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> None:
        """Encode every image part (once). Unreadable ones are dropped with a note."""
        kept: list[Part] = []
        for part in self.parts:
            if isinstance(part, ImagePart) and part.encoded is None:
                try:
                    part.encoded = encode_image(part.path, max_side=max_side)
                except ImageUnusable as exc:
                    self.notes.append(f"{exc} It was left out of the prompt.")
                    continue
            kept.append(part)
        self.parts = kept

    def to_messages(self, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> list[Any]:
        """LlamaIndex ChatMessages: image parts become ImageBlocks carrying data: URLs."""
        from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock

        self.encode_images(max_side)
        blocks: list[Any] = []
        for part in self.parts:
            if isinstance(part, str):
                if blocks and isinstance(blocks[-1], TextBlock):
                    blocks[-1] = TextBlock(text=blocks[-1].text + part)
                else:
                    blocks.append(TextBlock(text=part))
            else:
                assert part.encoded is not None
                blocks.append(ImageBlock(url=part.encoded.data_url, image_mimetype=part.encoded.mime))
        return [
            ChatMessage(role=MessageRole.SYSTEM, content=self.system),
            ChatMessage(role=MessageRole.USER, blocks=blocks),
        ]


def _quoted_title(src: Source) -> str:
    where = src.url or src.source
    title = f'"{src.title}"' if src.title else None
    if title and where:
        return f"{title} ({where})"
    return title or where or "unknown source"


def build_prompt(
    question: str,
    sources: Sequence[Source],
    *,
    question_image: Optional[PathLike] = None,
    vision: bool = True,
    system: str = SYSTEM_PROMPT,
) -> Prompt:
    """Assemble the prompt. Vision: images go as image parts next to their captions.
    Text-only: images are described by their captions only.
    """
    parts: list[Part] = []
    notes: list[str] = []
    if sources:
        parts.append("Sources:\n\n")
    else:
        parts.append("No sources were found for this question.\n\n")
    for src in sources:
        if src.modality == "image":
            parts.append(f"[{src.n}] Image from {_quoted_title(src)}\n")
            caption = (src.text or "").strip()
            parts.append(f"Caption: {caption}\n" if caption else "Caption: (none)\n")
            path = src.image_path
            if vision and path and Path(path).is_file():
                parts.append(ImagePart(path=str(path), n=src.n))
            elif vision:
                notes.append(f"Image [{src.n}] has no readable file ({path}); sent its caption only.")
                parts.append("(The image file is missing; only its caption is available.)\n")
            else:
                parts.append("(The image itself is not shown; rely on its caption.)\n")
            parts.append("\n")
        else:
            parts.append(f"[{src.n}] Passage from {_quoted_title(src)}\n")
            parts.append(f"{(src.text or '').strip()}\n\n")
    parts.append(f"Question: {question.strip() or '(no text: see the image)'}\n")
    if question_image is not None:
        if vision:
            parts.append(
                "The question comes with this image from the user (it is not a numbered source):\n"
            )
            parts.append(ImagePart(path=str(question_image)))
        else:
            parts.append(
                f"(The user also gave an image, {Path(question_image).name}, which this "
                "model cannot see; the sources were retrieved with it.)\n"
            )
    parts.append("\nAnswer the question from the sources above, citing them as [n].\n")
    return Prompt(system=system, parts=parts, vision=vision, notes=notes)


# --------------------------------------------------------------------------- citations

_CITATION = re.compile(
    r"\[\s*(?:sources?\s*)?(\d+(?:\s*(?:,|;|-|–|and)\s*(?:sources?\s*)?\d+)*)\s*\]",
    re.IGNORECASE,
)


def citation_numbers(text: str) -> list[int]:
    """Every number cited as [n], [n, m], [n-m] or [source n], in order of first appearance."""
    found: list[int] = []
    for match in _CITATION.finditer(text or ""):
        body = re.sub(r"(?i)sources?", "", match.group(1))
        for piece in re.split(r"\s*(?:,|;|and)\s*", body):
            bounds = re.split(r"\s*[-–]\s*", piece.strip())
            try:
                nums = [int(b) for b in bounds if b]
            except ValueError:
                continue
            if len(nums) == 2 and 0 <= nums[1] - nums[0] <= 20:
                candidates = list(range(nums[0], nums[1] + 1))
            else:
                candidates = nums
            for n in candidates:
                if n not in found:
                    found.append(n)
    return found


def parse_citations(text: str, sources: Sequence[Source]) -> tuple[list[Source], list[int]]:
    """(cited sources ordered by number, cited numbers that match no source)."""
    by_n = {s.n: s for s in sources}
    numbers = citation_numbers(text)
    cited = sorted((by_n[n] for n in numbers if n in by_n), key=lambda s: s.n)
    unknown = [n for n in numbers if n not in by_n]
    return cited, unknown


# --------------------------------------------------------------------------- answer


@dataclass
class Answer:
    """The result of a question: answer text (None without an LLM), sources, citations."""

    question: str
    answer: Optional[str]
    sources: list[Source]
    cited: list[Source] = field(default_factory=list)
    unknown_citations: list[int] = field(default_factory=list)
    prompt: Optional[str] = None  # set when no LLM is used: what would be sent
    image: Optional[str] = None  # the image given with the question
    llm: Optional[dict[str, Any]] = None  # backend, model, base_url, vision
    vision: bool = False  # whether pixels were sent
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "question": self.question,
            "image": self.image,
            "answer": self.answer,
            "sources": [s.to_dict() for s in self.sources],
            "cited": [s.to_dict() for s in self.cited],
            "unknown_citations": self.unknown_citations,
            "llm": self.llm,
            "vision": self.vision,
            "notes": self.notes,
        }
        if self.prompt is not None:
            data["prompt"] = self.prompt
        return data

    def __str__(self) -> str:
        return self.answer if self.answer is not None else (self.prompt or "")


class AnswerStream:
    """Text deltas of an answer as they arrive; `.answer` is the full Answer once consumed."""

    def __init__(self, sources: list[Source], tokens: Iterator[str], finish: Callable[[str], Answer]):
        self.sources = sources
        self._tokens = tokens
        self._finish = finish
        self._text: list[str] = []
        self.answer: Optional[Answer] = None

    @classmethod
    def done(cls, answer: Answer) -> "AnswerStream":
        stream = cls(answer.sources, iter(()), lambda _text: answer)
        stream.answer = answer
        return stream

    def __iter__(self) -> Iterator[str]:
        if self.answer is not None:
            return
        for delta in self._tokens:
            self._text.append(delta)
            yield delta
        self.answer = self._finish("".join(self._text))

    def get_answer(self) -> Answer:
        """Consume what is left and return the Answer."""
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer


# --------------------------------------------------------------------------- engine


def _to_node(src: Source) -> NodeWithScore:
    metadata = {
        "n": src.n,
        "modality": src.modality,
        "source": src.source,
        "title": src.title,
        "url": src.url,
    }
    kwargs: dict[str, Any] = {"text": src.text or "", "metadata": metadata}
    if src.node_id:
        kwargs["id_"] = src.node_id
    if src.modality == "image":
        node: TextNode = ImageNode(image_path=src.image_path, **kwargs)
    else:
        node = TextNode(**kwargs)
    return NodeWithScore(node=node, score=src.score)


@dataclass
class _Prepared:
    question: str
    image: Optional[str]
    sources: list[Source]
    prompt: Prompt


class RagQueryEngine(BaseQueryEngine):
    """A LlamaIndex query engine: retrieve, build the prompt, ask the LLM, cite.

    `query("...")` / `aquery(...)` return a Response whose `source_nodes` are the numbered
    sources (metadata["n"] is the citation number) and whose metadata is `Answer.to_dict()`.
    Pass `QueryBundle(question, image_path=...)` to ask with an image. With `streaming=True`
    they return a (Async)StreamingResponse. `ask()` / `stream()` return richer `Answer` objects.

    llm=None never calls a model (and never falls back to OpenAI): the answer carries the
    prompt that would be sent.
    """

    def __init__(
        self,
        retriever: Any,
        llm: Any = None,
        *,
        spec: Optional[LLMSpec] = None,
        vision: Optional[bool] = None,
        top_k: int = 5,
        image_top_k: int = 3,
        max_image_side: Optional[int] = None,
        fallback_to_captions: Optional[bool] = None,
        streaming: bool = False,
        callback_manager: Optional[CallbackManager] = None,
    ) -> None:
        super().__init__(callback_manager=callback_manager)
        self.retriever = retriever
        self.llm = llm
        if spec is None:
            spec = spec_for_llm(llm, vision) if llm is not None else LLMSpec(backend="none", vision=vision is not False)
        self.spec = spec
        self.vision = spec.vision if vision is None else bool(vision)
        self.top_k = top_k
        self.image_top_k = image_top_k
        self.max_image_side = max_image_side or spec.max_image_side
        self.fallback_to_captions = (
            spec.may_fall_back_to_captions if fallback_to_captions is None else fallback_to_captions
        )
        self.streaming = streaming

    @classmethod
    def from_settings(cls, settings: Any, retriever: Any, **kwargs: Any) -> "RagQueryEngine":
        """Engine with the LLM named by RAG_LLM (none by default)."""
        spec = resolve_llm(settings)
        return cls(retriever, build_llm(spec), spec=spec, **kwargs)

    def __repr__(self) -> str:
        return f"RagQueryEngine(llm={self.spec.backend!r}, model={self.spec.model!r}, vision={self.vision})"

    # PromptMixin: the prompt is assembled in code (see build_prompt), not from templates.
    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    # ---- steps

    def retrieve_sources(
        self, question: str, image: Optional[PathLike] = None, filters: Any = None
    ) -> list[Source]:
        hits = self.retriever.search(
            query=question,
            image=image,
            top_k=self.top_k,
            image_top_k=self.image_top_k,
            filters=filters,
        )
        return number_sources(hits)

    def _prepare(self, question: str, image: Optional[PathLike], filters: Any) -> _Prepared:
        if not (question or "").strip() and image is None:
            raise RagError("Ask a question, give an image, or both.")
        if image is not None and not Path(image).is_file():
            raise RagError(f"The question image {image} does not exist or is not a file.")
        sources = self.retrieve_sources(question, image, filters)
        prompt = build_prompt(question, sources, question_image=image, vision=self.vision)
        return _Prepared(question, str(image) if image is not None else None, sources, prompt)

    def _finish(self, prep: _Prepared, text: Optional[str], prompt: Prompt) -> Answer:
        answer = Answer(
            question=prep.question,
            answer=text,
            sources=prep.sources,
            image=prep.image,
            llm=self.spec.to_dict(),
            vision=prompt.vision and bool(prompt.images),
            notes=list(prompt.notes),
        )
        if text is None:
            answer.prompt = prompt.render()
            answer.vision = False
        else:
            answer.cited, answer.unknown_citations = parse_citations(text, prep.sources)
        return answer

    def _text_only(self, prep: _Prepared, refused: ImagesRefusedError) -> Prompt:
        prompt = build_prompt(prep.question, prep.sources, question_image=prep.image, vision=False)
        prompt.notes.append(
            f"The model {self.spec.model!r} refused the images (HTTP "
            f"{getattr(refused, 'status', '?')}: {getattr(refused, 'detail', '')}); answered again "
            "from the passages and image captions only. Set RAG_LLM_VISION=false to skip "
            "sending images."
        )
        return prompt

    def _messages(self, prompt: Prompt) -> list[Any]:
        messages = prompt.to_messages(self.max_image_side)
        logger.debug(
            "asking %s model %s: %d image parts, vision=%s",
            self.spec.backend, self.spec.model, len(prompt.images), prompt.vision,
        )
        return messages

    def _fallback_or_raise(self, exc: Exception, prep: _Prepared, prompt: Prompt, started: bool = False) -> Prompt:
        """After a failed LLM call: the text-only prompt to retry with when the model refused
        the images (and nothing was streamed yet), otherwise raise the error users see."""
        error = llm_error(exc, self.spec, sent_images=bool(prompt.images))
        if not started and isinstance(error, ImagesRefusedError) and self.fallback_to_captions and prompt.vision:
            return self._text_only(prep, error)
        raise error from None

    # ---- public API

    def ask(self, question: str, image: Optional[PathLike] = None, filters: Any = None) -> Answer:
        """Retrieve, ask the LLM (if any) and return the Answer with its citations."""
        prep = self._prepare(question, image, filters)
        if self.llm is None:
            return self._finish(prep, None, prep.prompt)
        prompt = prep.prompt
        while True:
            try:
                messages = self._messages(prompt)
                response = self.llm.chat(messages)
            except Exception as exc:
                prompt = self._fallback_or_raise(exc, prep, prompt)
                continue
            return self._finish(prep, response.message.content or "", prompt)

    def stream(self, question: str, image: Optional[PathLike] = None, filters: Any = None) -> AnswerStream:
        """Like ask(), but the answer text arrives as it is generated.

        Retrieval happens now (so `.sources` is ready); iterate for text deltas; `.answer`
        holds the Answer at the end. Without an LLM the stream is empty and `.answer` is set.
        """
        prep = self._prepare(question, image, filters)
        if self.llm is None:
            return AnswerStream.done(self._finish(prep, None, prep.prompt))
        state = {"prompt": prep.prompt}

        def tokens() -> Iterator[str]:
            prompt = prep.prompt
            while True:
                state["prompt"] = prompt
                started = False
                try:
                    messages = self._messages(prompt)
                    for chunk in self.llm.stream_chat(messages):
                        if chunk.delta:
                            started = True
                            yield chunk.delta
                    return
                except Exception as exc:
                    prompt = self._fallback_or_raise(exc, prep, prompt, started)

        return AnswerStream(prep.sources, tokens(), lambda text: self._finish(prep, text, state["prompt"]))

    async def aask(self, question: str, image: Optional[PathLike] = None, filters: Any = None) -> Answer:
        """Async ask(). Retrieval runs in a worker thread."""
        import asyncio

        prep = await asyncio.to_thread(self._prepare, question, image, filters)
        if self.llm is None:
            return self._finish(prep, None, prep.prompt)
        prompt = prep.prompt
        while True:
            try:
                messages = self._messages(prompt)
                response = await self.llm.achat(messages)
            except Exception as exc:
                prompt = self._fallback_or_raise(exc, prep, prompt)
                continue
            return self._finish(prep, response.message.content or "", prompt)

    async def _astream_tokens(self, prep: _Prepared, state: dict) -> AsyncIterator[str]:
        prompt = prep.prompt
        while True:
            state["prompt"] = prompt
            started = False
            try:
                messages = self._messages(prompt)
                async for chunk in await self.llm.astream_chat(messages):
                    if chunk.delta:
                        started = True
                        yield chunk.delta
                return
            except Exception as exc:
                prompt = self._fallback_or_raise(exc, prep, prompt, started)

    # ---- LlamaIndex query engine protocol

    @staticmethod
    def _bundle(query_bundle: QueryBundle) -> tuple[str, Optional[str]]:
        return query_bundle.query_str, query_bundle.image_path

    def _response(self, answer: Answer) -> Response:
        text = answer.answer if answer.answer is not None else NO_LLM_MESSAGE
        return Response(
            response=text,
            source_nodes=[_to_node(s) for s in answer.sources],
            metadata=answer.to_dict(),
        )

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question, image = self._bundle(query_bundle)
        if not self.streaming:
            return self._response(self.ask(question, image))
        stream = self.stream(question, image)
        metadata: dict[str, Any] = {}
        if stream.answer is not None:  # no LLM
            return self._response(stream.answer)

        def gen() -> Iterator[str]:
            yield from stream
            assert stream.answer is not None
            metadata.update(stream.answer.to_dict())

        return StreamingResponse(
            response_gen=gen(),
            source_nodes=[_to_node(s) for s in stream.sources],
            metadata=metadata,
        )

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question, image = self._bundle(query_bundle)
        if not self.streaming or self.llm is None:
            return self._response(await self.aask(question, image))
        import asyncio

        prep = await asyncio.to_thread(self._prepare, question, image, None)
        state: dict[str, Any] = {"prompt": prep.prompt}
        metadata: dict[str, Any] = {}

        async def gen() -> AsyncIterator[str]:
            parts: list[str] = []
            async for delta in self._astream_tokens(prep, state):
                parts.append(delta)
                yield delta
            metadata.update(self._finish(prep, "".join(parts), state["prompt"]).to_dict())

        return AsyncStreamingResponse(
            response_gen=gen(),
            source_nodes=[_to_node(s) for s in prep.sources],
            metadata=metadata,
        )


def open_query_engine(settings: Any, retriever: Any = None, **kwargs: Any) -> RagQueryEngine:
    """The engine for these settings; opens the retriever with `rag.search.retriever` when not given."""
    if retriever is None:
        from rag.search.retriever import open_retriever

        retriever = open_retriever(settings)
    return RagQueryEngine.from_settings(settings, retriever, **kwargs)
