"""The query engine: retrieved passages and images -> prompt -> LLM -> answer with citations.

The pure parts live next to it: `rag.answer.citations` (number the sources, parse `[n]`),
`rag.answer.prompt` (assemble the prompt), `rag.answer.attempts` (the LLM call's attempts:
the prompt, then the caption fallback when a model refuses images).

`RagQueryEngine` is a LlamaIndex query engine over a retriever and an LLM (or none: with no
LLM it never calls a model and never falls back to OpenAI; the answer holds the sources and
the exact prompt that would be sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Optional, Union

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import QueryBundle

from rag.answer.attempts import AnswerStream, Attempts, adeltas, deltas
from rag.answer.citations import citation_numbers, number_sources, parse_citations
from rag.answer.llms import ImagesRefusedError, LLMSpec, build_llm, resolve_llm, spec_for_llm
from rag.answer.prompt import SYSTEM_PROMPT, ImagePart, Prompt, build_prompt
from rag.errors import RagError
from rag.media.encode import EncodedImage, ImageUnusable, encode_image
from rag.media.images import DEFAULT_MAX_PIXELS
from rag.search.nodes import hit_to_scored_node
from rag.types import Answer, Hit

__all__ = [
    "NO_LLM_MESSAGE", "SYSTEM_PROMPT", "Answer", "AnswerStream", "EncodedImage", "ImagePart", "ImageUnusable",
    "Prompt", "RagQueryEngine", "build_prompt", "citation_numbers", "encode_image", "number_sources",
    "open_query_engine", "parse_citations",
]

PathLike = Union[str, Path]

NO_LLM_MESSAGE = (
    "No LLM is configured (RAG_LLM=none), so no model was called. The retrieved sources are "
    "in source_nodes and the prompt that would be sent is in metadata['prompt']."
)


@dataclass
class _Prepared:
    question: str
    image: Optional[str]
    sources: list[Hit]
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
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
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
        self.max_image_pixels = int(max_image_pixels)
        self.fallback_to_captions = (
            spec.may_fall_back_to_captions if fallback_to_captions is None else fallback_to_captions
        )
        self.streaming = streaming

    @classmethod
    def from_settings(cls, settings: Any, retriever: Any, **kwargs: Any) -> "RagQueryEngine":
        """Engine with the LLM named by RAG_LLM (none by default); images it sends obey
        RAG_MAX_IMAGE_PIXELS."""
        spec = resolve_llm(settings)
        kwargs.setdefault("max_image_pixels", settings.max_image_pixels)
        return cls(retriever, build_llm(spec), spec=spec, **kwargs)

    def __repr__(self) -> str:
        return f"RagQueryEngine(llm={self.spec.backend!r}, model={self.spec.model!r}, vision={self.vision})"

    # PromptMixin: the prompt is assembled in code (see build_prompt), not from templates.
    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    # ---- steps

    def retrieve_sources(
        self, question: str, image: Optional[PathLike] = None, filters: Any = None
    ) -> list[Hit]:
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
            answer.prompt_parts = prompt.to_parts()
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

    def _attempts(self, prep: _Prepared) -> Attempts:
        return Attempts(
            prep.prompt, self.spec, lambda refused: self._text_only(prep, refused),
            allow_fallback=self.fallback_to_captions, max_side=self.max_image_side,
            max_pixels=self.max_image_pixels,
        )

    # ---- the LLM calls, as text deltas

    def _chat(self, messages: list[Any]) -> Iterator[Optional[str]]:
        yield self.llm.chat(messages).message.content

    def _stream_chat(self, messages: list[Any]) -> Iterator[Optional[str]]:
        return (chunk.delta for chunk in self.llm.stream_chat(messages))

    async def _achat(self, messages: list[Any]) -> AsyncIterator[Optional[str]]:
        yield (await self.llm.achat(messages)).message.content

    async def _astream_chat(self, messages: list[Any]) -> AsyncIterator[Optional[str]]:
        async for chunk in await self.llm.astream_chat(messages):
            yield chunk.delta

    # ---- public API

    def ask(self, question: str, image: Optional[PathLike] = None, filters: Any = None) -> Answer:
        """Retrieve, ask the LLM (if any) and return the Answer with its citations."""
        prep = self._prepare(question, image, filters)
        if self.llm is None:
            return self._finish(prep, None, prep.prompt)
        attempts = self._attempts(prep)
        text = "".join(deltas(attempts, self._chat))
        return self._finish(prep, text, attempts.prompt)

    def stream(self, question: str, image: Optional[PathLike] = None, filters: Any = None) -> AnswerStream:
        """Like ask(), but the answer text arrives as it is generated.

        Retrieval happens now (so `.sources` is ready); iterate for text deltas; `.answer`
        holds the Answer at the end. Without an LLM the stream is empty and `.answer` is set.
        """
        prep = self._prepare(question, image, filters)
        if self.llm is None:
            return AnswerStream.done(self._finish(prep, None, prep.prompt))
        attempts = self._attempts(prep)
        return AnswerStream(prep.sources, deltas(attempts, self._stream_chat),
                            lambda text: self._finish(prep, text, attempts.prompt))

    async def aask(self, question: str, image: Optional[PathLike] = None, filters: Any = None) -> Answer:
        """Async ask(). Retrieval runs in a worker thread."""
        prep = await self._aprepare(question, image, filters)
        if self.llm is None:
            return self._finish(prep, None, prep.prompt)
        attempts = self._attempts(prep)
        text = "".join([delta async for delta in adeltas(attempts, self._achat)])
        return self._finish(prep, text, attempts.prompt)

    async def _aprepare(self, question: str, image: Optional[PathLike], filters: Any) -> _Prepared:
        import asyncio

        return await asyncio.to_thread(self._prepare, question, image, filters)

    # ---- LlamaIndex query engine protocol

    def _response(self, answer: Answer) -> Response:
        text = answer.answer if answer.answer is not None else NO_LLM_MESSAGE
        return Response(
            response=text,
            source_nodes=[hit_to_scored_node(s) for s in answer.sources],
            metadata=answer.to_dict(),
        )

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question, image = query_bundle.query_str, query_bundle.image_path
        if not self.streaming:
            return self._response(self.ask(question, image))
        stream = self.stream(question, image)
        if stream.answer is not None:  # no LLM
            return self._response(stream.answer)
        metadata: dict[str, Any] = {}

        def gen() -> Iterator[str]:
            yield from stream
            assert stream.answer is not None
            metadata.update(stream.answer.to_dict())

        return StreamingResponse(
            response_gen=gen(),
            source_nodes=[hit_to_scored_node(s) for s in stream.sources],
            metadata=metadata,
        )

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question, image = query_bundle.query_str, query_bundle.image_path
        if not self.streaming or self.llm is None:
            return self._response(await self.aask(question, image))
        prep = await self._aprepare(question, image, None)
        attempts = self._attempts(prep)
        metadata: dict[str, Any] = {}

        async def gen() -> AsyncIterator[str]:
            parts: list[str] = []
            async for delta in adeltas(attempts, self._astream_chat):
                parts.append(delta)
                yield delta
            metadata.update(self._finish(prep, "".join(parts), attempts.prompt).to_dict())

        return AsyncStreamingResponse(
            response_gen=gen(),
            source_nodes=[hit_to_scored_node(s) for s in prep.sources],
            metadata=metadata,
        )


def open_query_engine(settings: Any, retriever: Any = None, **kwargs: Any) -> RagQueryEngine:
    """The engine for these settings; opens the retriever with `rag.search.retriever` when not given."""
    if retriever is None:
        from rag.search.retriever import open_retriever

        retriever = open_retriever(settings)
    return RagQueryEngine.from_settings(settings, retriever, **kwargs)
