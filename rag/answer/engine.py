"""The query engine: retrieved passages and images -> prompt -> LLM -> answer with citations.

The pure parts live next to it: `rag.answer.citations` (number the sources, parse `[n]`),
`rag.answer.prompt` (assemble the prompt), `rag.answer.attempts` (the LLM call's attempts:
the prompt, then the caption fallback when a model refuses images).

`RagQueryEngine` is a LlamaIndex query engine over a retriever and an LLM (or none: with no
LLM it never calls a model and never falls back to OpenAI; the answer holds the sources and
the exact prompt that would be sent). The retriever is our `Retriever` or any LlamaIndex
`BaseRetriever` (see `rag.search.llama.retrieve_hits`); `node_postprocessors` run on the
retrieved nodes before they are numbered; `get_prompts()` / `update_prompts()` expose the
system prompt and the answer instruction as PromptTemplates. It reports to its
`CallbackManager` (query, retrieve, synthesize and LLM events) and to LlamaIndex
instrumentation (spans for query, retrieval and synthesis, with the stock start/end events),
as LlamaIndex's own engines do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Sequence, Union

import llama_index.core.instrumentation as instrument

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index.core.instrumentation.events.retrieval import RetrievalEndEvent, RetrievalStartEvent
from llama_index.core.instrumentation.events.synthesis import SynthesizeEndEvent, SynthesizeStartEvent
from llama_index.core.prompts import BasePromptTemplate, PromptTemplate
from llama_index.core.schema import QueryBundle

from rag.answer.attempts import AnswerStream, Attempts, adeltas, deltas
from rag.answer.citations import citation_numbers, number_sources, parse_citations
from rag.answer.llms import ImagesRefusedError, LLMSpec, build_llm, resolve_llm, spec_for_llm, stream_cut_error, stream_finished
from rag.answer.prompt import ANSWER_INSTRUCTION, SYSTEM_PROMPT, ImagePart, Prompt, build_prompt
from rag.errors import RagError
from rag.media.encode import EncodedImage, ImageUnusable, encode_image
from rag.media.images import DEFAULT_MAX_PIXELS
from rag.search.llama import retrieve_hits
from rag.search.nodes import hit_to_scored_node
from rag.types import Answer, Hit

__all__ = [
    "NO_LLM_MESSAGE", "SYSTEM_PROMPT", "Answer", "AnswerStream", "EncodedImage", "ImagePart", "ImageUnusable",
    "Prompt", "RagQueryEngine", "build_prompt", "citation_numbers", "encode_image", "number_sources",
    "open_query_engine", "parse_citations",
]

PathLike = Union[str, Path]

dispatcher = instrument.get_dispatcher(__name__)
PROMPT_KEYS = ("system_prompt", "answer_instruction")

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


class _StreamWatch:
    """What a streamed reply has sent: its text, and whether the server said it finished."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finished: Optional[bool] = None  # None: the server never says

    def see(self, chunk: Any) -> None:
        state = stream_finished(chunk)
        self.finished = state if self.finished is None else (self.finished or bool(state))
        self.parts.append(chunk.delta or "")

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def check(self, spec: LLMSpec) -> None:
        """Raise when the stream stopped without the server's finish marker (cut short)."""
        received = sum(len(p) for p in self.parts)
        if self.finished is False and received:
            raise stream_cut_error(spec, received)


class RagQueryEngine(BaseQueryEngine):
    """A LlamaIndex query engine: retrieve, build the prompt, ask the LLM, cite.

    `query("...")` / `aquery(...)` return a Response whose `source_nodes` are the numbered
    sources (metadata["n"] is the citation number) and whose metadata is `Answer.to_dict()`.
    Pass `QueryBundle(question, image_path=...)` to ask with an image. With `streaming=True`
    they return a (Async)StreamingResponse. `ask()` / `stream()` return richer `Answer` objects.

    llm=None never calls a model (and never falls back to OpenAI): the answer carries the
    prompt that would be sent. `retriever` is our `Retriever` or any LlamaIndex `BaseRetriever`
    (its own sizes apply then, and filters must be set on it); `node_postprocessors` run on the
    retrieved nodes before numbering.
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
        node_postprocessors: Optional[Sequence[Any]] = None,
        system_prompt: str = SYSTEM_PROMPT,
        answer_instruction: str = ANSWER_INSTRUCTION,
    ) -> None:
        super().__init__(callback_manager=callback_manager)
        self.retriever = retriever
        self.node_postprocessors: List[Any] = list(node_postprocessors or [])
        if callback_manager is not None:  # as RetrieverQueryEngine does: one manager sees every step
            for part in [retriever, *self.node_postprocessors]:
                if hasattr(part, "callback_manager") and not hasattr(part, "search"):
                    part.callback_manager = callback_manager
        self.prompts: Dict[str, BasePromptTemplate] = {
            "system_prompt": PromptTemplate(system_prompt), "answer_instruction": PromptTemplate(answer_instruction),
        }
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

    # ---- PromptMixin: the system prompt and the closing instruction are templates; the
    # sources between them are assembled in code (see build_prompt), so braces in passages
    # never reach a formatter.
    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    def _get_prompts(self) -> Dict[str, BasePromptTemplate]:
        return dict(self.prompts)

    def _update_prompts(self, prompts_dict: Dict[str, BasePromptTemplate]) -> None:
        for key, template in prompts_dict.items():
            if key not in PROMPT_KEYS:
                raise RagError(f"unknown prompt {key!r}: this engine has {', '.join(PROMPT_KEYS)}")
            self.prompts[key] = template if isinstance(template, BasePromptTemplate) else PromptTemplate(str(template))

    def prompt_text(self, key: str) -> str:
        """The text of a prompt ("system_prompt" or "answer_instruction"), its variables filled."""
        template = self.prompts[key]
        missing = sorted(set(getattr(template, "template_vars", [])) - set(getattr(template, "kwargs", {})))
        if missing:  # LlamaIndex would leave "{name}" in the text
            raise RagError(f"the prompt {key!r} has a variable without a value ({', '.join(map(repr, missing))}): "
                           "fill it with template.partial_format(...) before update_prompts()")
        return template.format()

    def _build_prompt(self, question: str, sources: list[Hit], image: Optional[PathLike], vision: bool) -> Prompt:
        return build_prompt(question, sources, question_image=image, vision=vision,
                            system=self.prompt_text("system_prompt"),
                            instruction=self.prompt_text("answer_instruction"))

    # ---- steps

    @dispatcher.span
    def retrieve_sources(
        self, question: str, image: Optional[PathLike] = None, filters: Any = None
    ) -> list[Hit]:
        """Retrieve (our retriever or any BaseRetriever), post-process, number the sources."""
        if not hasattr(self.retriever, "search"):  # a BaseRetriever reports its own retrieval
            return number_sources(self._retrieve_hits(question, image, filters))
        bundle = QueryBundle(question, image_path=str(image)) if image is not None else QueryBundle(question)
        dispatcher.event(RetrievalStartEvent(str_or_query_bundle=bundle))
        with self.callback_manager.event(CBEventType.RETRIEVE, payload={EventPayload.QUERY_STR: question}) as event:
            hits = self._retrieve_hits(question, image, filters)
            nodes = [hit_to_scored_node(hit) for hit in hits]
            event.on_end(payload={EventPayload.NODES: nodes})
        dispatcher.event(RetrievalEndEvent(str_or_query_bundle=bundle, nodes=nodes))
        return number_sources(hits)

    def _retrieve_hits(self, question: str, image: Optional[PathLike], filters: Any) -> list[Hit]:
        return retrieve_hits(self.retriever, question, image, top_k=self.top_k, image_top_k=self.image_top_k,
                             filters=filters, postprocessors=self.node_postprocessors)

    def _prepare(self, question: str, image: Optional[PathLike], filters: Any) -> _Prepared:
        if not (question or "").strip() and image is None:
            raise RagError("Ask a question, give an image, or both.")
        if image is not None and not Path(image).is_file():
            raise RagError(f"The question image {image} does not exist or is not a file.")
        sources = self.retrieve_sources(question, image, filters)
        prompt = self._build_prompt(question, sources, image, self.vision)
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
        prompt = self._build_prompt(prep.question, prep.sources, prep.image, False)
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

    # ---- the LLM calls, as text deltas (each an LLM event, unless the LLM reports to our
    # callback manager itself)

    def _llm_event_start(self, messages: list[Any]) -> Optional[str]:
        if getattr(self.llm, "callback_manager", None) is self.callback_manager:
            return None
        return self.callback_manager.on_event_start(CBEventType.LLM, payload={EventPayload.MESSAGES: messages})

    def _llm_event_end(self, event_id: Optional[str], text: str) -> None:
        if event_id is not None:
            self.callback_manager.on_event_end(CBEventType.LLM, payload={EventPayload.COMPLETION: text},
                                               event_id=event_id)

    def _chat(self, messages: list[Any]) -> Iterator[Optional[str]]:
        event_id = self._llm_event_start(messages)
        text = self.llm.chat(messages).message.content
        self._llm_event_end(event_id, text or "")
        yield text

    def _stream_chat(self, messages: list[Any]) -> Iterator[Optional[str]]:
        event_id = self._llm_event_start(messages)
        watch = _StreamWatch()
        for chunk in self.llm.stream_chat(messages):
            watch.see(chunk)
            yield chunk.delta
        self._llm_event_end(event_id, watch.text)
        watch.check(self.spec)

    async def _achat(self, messages: list[Any]) -> AsyncIterator[Optional[str]]:
        event_id = self._llm_event_start(messages)
        text = (await self.llm.achat(messages)).message.content
        self._llm_event_end(event_id, text or "")
        yield text

    async def _astream_chat(self, messages: list[Any]) -> AsyncIterator[Optional[str]]:
        event_id = self._llm_event_start(messages)
        watch = _StreamWatch()
        async for chunk in await self.llm.astream_chat(messages):
            watch.see(chunk)
            yield chunk.delta
        self._llm_event_end(event_id, watch.text)
        watch.check(self.spec)

    # ---- synthesis: the prompt (and the LLM, if any) -> Answer, reported as LlamaIndex does

    def _synthesis_start(self, prep: _Prepared) -> str:
        dispatcher.event(SynthesizeStartEvent(query=QueryBundle(prep.question)))
        return self.callback_manager.on_event_start(CBEventType.SYNTHESIZE,
                                                    payload={EventPayload.QUERY_STR: prep.question})

    def _synthesis_end(self, prep: _Prepared, event_id: str, answer: Answer) -> Answer:
        response = self._response(answer)
        self.callback_manager.on_event_end(CBEventType.SYNTHESIZE, payload={EventPayload.RESPONSE: response},
                                           event_id=event_id)
        dispatcher.event(SynthesizeEndEvent(query=QueryBundle(prep.question), response=response))
        return answer

    @dispatcher.span
    def synthesize(self, prep: _Prepared) -> Answer:
        """The Answer for retrieved sources: the LLM's, or the prompt alone without an LLM."""
        event_id = self._synthesis_start(prep)
        if self.llm is None:
            answer = self._finish(prep, None, prep.prompt)
        else:
            attempts = self._attempts(prep)
            answer = self._finish(prep, "".join(deltas(attempts, self._chat)), attempts.prompt)
        return self._synthesis_end(prep, event_id, answer)

    @dispatcher.span
    async def asynthesize(self, prep: _Prepared) -> Answer:
        """Async synthesize()."""
        event_id = self._synthesis_start(prep)
        if self.llm is None:
            answer = self._finish(prep, None, prep.prompt)
        else:
            attempts = self._attempts(prep)
            text = "".join([delta async for delta in adeltas(attempts, self._achat)])
            answer = self._finish(prep, text, attempts.prompt)
        return self._synthesis_end(prep, event_id, answer)

    # ---- public API

    def ask(self, question: str, image: Optional[PathLike] = None, filters: Any = None) -> Answer:
        """Retrieve, ask the LLM (if any) and return the Answer with its citations."""
        return self.synthesize(self._prepare(question, image, filters))

    def stream(self, question: str, image: Optional[PathLike] = None, filters: Any = None) -> AnswerStream:
        """Like ask(), but the answer text arrives as it is generated.

        Retrieval happens now (so `.sources` is ready); iterate for text deltas; `.answer`
        holds the Answer at the end. Without an LLM the stream is empty and `.answer` is set.
        """
        prep = self._prepare(question, image, filters)
        if self.llm is None:
            return AnswerStream.done(self.synthesize(prep))
        attempts = self._attempts(prep)
        event_id = self._synthesis_start(prep)
        return AnswerStream(prep.sources, deltas(attempts, self._stream_chat),
                            lambda text: self._synthesis_end(prep, event_id, self._finish(prep, text, attempts.prompt)))

    async def aask(self, question: str, image: Optional[PathLike] = None, filters: Any = None) -> Answer:
        """Async ask(). Retrieval runs in a worker thread."""
        return await self.asynthesize(await self._aprepare(question, image, filters))

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

    @dispatcher.span
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        with self.callback_manager.event(CBEventType.QUERY, payload={EventPayload.QUERY_STR: query_bundle.query_str}) as event:
            response = self._query_response(query_bundle)
            event.on_end(payload={EventPayload.RESPONSE: response})
        return response

    def _query_response(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
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

    @dispatcher.span
    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        with self.callback_manager.event(CBEventType.QUERY, payload={EventPayload.QUERY_STR: query_bundle.query_str}) as event:
            response = await self._aquery_response(query_bundle)
            event.on_end(payload={EventPayload.RESPONSE: response})
        return response

    async def _aquery_response(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question, image = query_bundle.query_str, query_bundle.image_path
        if not self.streaming or self.llm is None:
            return self._response(await self.aask(question, image))
        prep = await self._aprepare(question, image, None)
        attempts = self._attempts(prep)
        metadata: dict[str, Any] = {}
        event_id = self._synthesis_start(prep)

        async def gen() -> AsyncIterator[str]:
            parts: list[str] = []
            async for delta in adeltas(attempts, self._astream_chat):
                parts.append(delta)
                yield delta
            answer = self._synthesis_end(prep, event_id, self._finish(prep, "".join(parts), attempts.prompt))
            metadata.update(answer.to_dict())

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
