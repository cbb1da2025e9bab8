"""Query encodings that arrive together share one forward pass.

A server answers many searches at once; each needs its query encoded by the text model and by
CLIP's text tower. One forward pass over 8 short queries costs far less than 8 passes of one
(on 2 CPU cores: about half; see docs/benchmarks.md), so `QueryBatcher` queues the queries and
one worker thread encodes whatever is queued, as one batch, whenever the model is free. A lone
query pays no wait: it is encoded as soon as it is queued. The worker thread exits when idle.
A query may ask for fewer intra-op threads than torch's default (`submit(item, threads)`), so
that two encoders that run at once share the cores instead of fighting over them.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable, List, Sequence, Tuple

Pending = Tuple[Any, Future, int]  # an item, its future, the intra-op threads it asked for (0: default)

EncodeBatch = Callable[[Sequence[Any]], List[Any]]


def query_encoder(embedding: Any) -> EncodeBatch:
    """A function that encodes many text queries in one forward pass with `embedding`.

    Our models offer `get_query_embedding_batch`; any other LlamaIndex embedding is called one
    query at a time through its own `get_query_embedding`.
    """
    batch = getattr(embedding, "get_query_embedding_batch", None)
    if batch is not None:
        return lambda queries: batch(list(queries))
    return lambda queries: [embedding.get_query_embedding(query) for query in queries]


def image_encoder(embedding: Any) -> EncodeBatch:
    """A function that encodes many query images (paths) in one batch with `embedding`."""
    return lambda paths: embedding.get_image_embedding_batch([str(path) for path in paths])


class QueryBatcher:
    """Encodes items submitted from any thread, batching those that wait together.

    `encode_batch(items)` returns one vector per item, in order. When a batch fails, its items
    are retried one by one so that one bad query fails alone. A batch runs on the intra-op
    threads its items asked for when they all asked for the same, else on torch's default.
    """

    def __init__(self, encode_batch: EncodeBatch, max_batch: int = 32, idle_seconds: float = 2.0) -> None:
        self.encode_batch = encode_batch
        self.max_batch = max(1, max_batch)
        self.idle_seconds = idle_seconds
        self._pending: List[Pending] = []
        self._lock = threading.Condition()
        self._worker: "threading.Thread | None" = None

    def submit(self, item: Any, threads: int = 0) -> Future:
        """Queue one item, to be encoded on `threads` intra-op threads (0: torch's default); the
        future gives its vector (or raises the encoder's error)."""
        future: Future = Future()
        with self._lock:
            self._pending.append((item, future, max(0, threads)))
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="rag-query-encoder", daemon=True)
                self._worker.start()
            self._lock.notify()
        return future

    def encode(self, item: Any) -> Any:
        """The vector of one item (blocking)."""
        return self.submit(item).result()

    def _next_batch(self) -> List[Pending]:
        with self._lock:
            if not self._pending:
                self._lock.wait(self.idle_seconds)
            if not self._pending:
                self._worker = None
                return []
            batch = self._pending[: self.max_batch]
            del self._pending[: len(batch)]
            return batch

    def _run(self) -> None:
        current, default = 0, 0  # the threads this worker runs on (0: as it started), torch's default
        while True:
            batch = self._next_batch()
            if not batch:
                return
            asked = {threads for _, _, threads in batch}
            wanted = asked.pop() if len(asked) == 1 else 0
            if wanted != current:
                from rag.models.hub import thread_count, use_threads_here

                default = default or thread_count()
                use_threads_here(wanted or default)
                current = wanted
            self._encode(batch)

    def _encode(self, batch: List[Pending]) -> None:
        try:
            vectors = self.encode_batch([item for item, _, _ in batch])
            if len(vectors) != len(batch):
                raise RuntimeError(f"the encoder returned {len(vectors)} vectors for {len(batch)} queries")
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting callers
            if len(batch) > 1:
                for one in batch:
                    self._encode([one])
            else:
                batch[0][1].set_exception(exc)
            return
        for (_, future, _), vector in zip(batch, vectors):
            future.set_result(vector)
