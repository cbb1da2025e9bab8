"""The LLM call's attempts, written once: the prompt, then (when the model refuses images and
nothing was streamed yet) the same prompt with captions instead of pixels.

`Attempts` is the policy, free of I/O: iterate it for the messages of each attempt, and
report a failure with `failed(exc)`, which either sets up the next attempt or raises the
error users see. `deltas` and `adeltas` drive it, sync and async, over any call that yields
text deltas; the engine's ask, stream, aask and async stream are thin wrappers over those
two. `AnswerStream` hands the deltas of a streamed answer to the caller.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Callable, Iterator, List, Optional

from rag.answer.llms import (MAX_ANSWER_CHARS, ImagesRefusedError, LLMSpec, answer_cut_note, empty_reply_error,
                             llm_error)
from rag.answer.prompt import Prompt
from rag.types import Answer, Hit

logger = logging.getLogger(__name__)

SyncCall = Callable[[List[Any]], Iterator[Optional[str]]]
AsyncCall = Callable[[List[Any]], AsyncIterator[Optional[str]]]


class Attempts:
    """The prompts to try in turn; `prompt` is the one of the current (at the end: the last) attempt.

    `fallback(error)` gives the caption-only prompt; it is used when the model refused the
    images, `allow_fallback` is set, the prompt carried images and no delta was delivered.
    """

    def __init__(self, prompt: Prompt, spec: LLMSpec, fallback: Callable[[ImagesRefusedError], Prompt],
                 *, allow_fallback: bool, max_side: int, max_pixels: int) -> None:
        self.prompt = prompt
        self.spec = spec
        self.started = False  # a delta of the current attempt reached the caller
        self._next: Optional[Prompt] = prompt
        self._fallback = fallback
        self._allow_fallback = allow_fallback
        self._max_side = max_side
        self._max_pixels = max_pixels

    def __iter__(self) -> Iterator[List[Any]]:
        while self._next is not None:
            self.prompt, self._next = self._next, None
            self.started = False
            messages = self.prompt.to_messages(self._max_side, self._max_pixels)
            logger.debug("asking %s model %s: %d image parts, vision=%s",
                         self.spec.backend, self.spec.model, len(self.prompt.images), self.prompt.vision)
            yield messages

    def deliver(self, delta: Optional[str]) -> bool:
        """Should this delta reach the caller? Non-empty ones do, and mark the attempt started."""
        if delta:
            self.started = True
        return bool(delta)

    def capped(self, delta: str, sent: int) -> Optional[str]:
        """The part of `delta` within MAX_ANSWER_CHARS after `sent` characters; None (and a note)
        once the answer reaches the cap: the caller stops reading."""
        room = MAX_ANSWER_CHARS - sent
        if len(delta) < room:
            return delta
        self.prompt.notes.append(answer_cut_note())
        return None

    def failed(self, exc: Exception) -> None:
        """After a failed call: set up the caption-only attempt when it applies, else raise."""
        error = llm_error(exc, self.spec, sent_images=bool(self.prompt.images))
        if (not self.started and isinstance(error, ImagesRefusedError) and self._allow_fallback
                and self.prompt.vision):
            self._next = self._fallback(error)
            return
        raise error from None


def deltas(attempts: Attempts, call: SyncCall) -> Iterator[str]:
    """The text deltas of the first attempt that succeeds (sync), at most MAX_ANSWER_CHARS."""
    for messages in attempts:
        sent = 0
        try:
            stream = call(messages)
            try:
                for delta in stream:
                    if attempts.deliver(delta):
                        part = attempts.capped(delta, sent)
                        if part is None:
                            yield delta[:MAX_ANSWER_CHARS - sent]
                            return
                        sent += len(part)
                        yield part
            finally:
                getattr(stream, "close", lambda: None)()
            if not sent:
                raise empty_reply_error(attempts.spec)
            return
        except Exception as exc:
            attempts.failed(exc)


async def adeltas(attempts: Attempts, call: AsyncCall) -> AsyncIterator[str]:
    """The text deltas of the first attempt that succeeds (async), at most MAX_ANSWER_CHARS."""
    for messages in attempts:
        sent = 0
        try:
            stream = call(messages)
            try:
                async for delta in stream:
                    if attempts.deliver(delta):
                        part = attempts.capped(delta, sent)
                        if part is None:
                            yield delta[:MAX_ANSWER_CHARS - sent]
                            return
                        sent += len(part)
                        yield part
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            if not sent:
                raise empty_reply_error(attempts.spec)
            return
        except Exception as exc:
            attempts.failed(exc)


class AnswerStream:
    """Text deltas of an answer as they arrive; `.answer` is the full Answer once consumed."""

    def __init__(self, sources: List[Hit], tokens: Iterator[str], finish: Callable[[str], Answer]):
        self.sources = sources
        self._tokens = tokens
        self._finish = finish
        self._text: List[str] = []
        self._notes: List[str] = []
        self.answer: Optional[Answer] = None

    @classmethod
    def done(cls, answer: Answer) -> "AnswerStream":
        """A stream with nothing left to read (the answer is already complete)."""
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
        self.answer.notes[:0] = self._notes

    def add_notes(self, notes: List[str]) -> None:
        """Notes to put first in the Answer (e.g. that the question was cut)."""
        if self.answer is not None:
            self.answer.notes[:0] = notes
        else:
            self._notes.extend(notes)

    def get_answer(self) -> Answer:
        """Consume what is left and return the Answer."""
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer
