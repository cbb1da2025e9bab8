"""Concurrent query encodings share forward passes, and give the vectors a lone query gets."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rag.models.query_batcher import QueryBatcher, query_encoder


class GatedEncoder:
    """Records each batch; the first batch waits for `release` so that later items queue up."""

    def __init__(self, fail_on: str = "") -> None:
        self.batches = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items):
        self.batches.append(list(items))
        self.started.set()
        self.release.wait(5)
        if self.fail_on and self.fail_on in items:
            raise ValueError(f"cannot encode {self.fail_on!r}")
        return [[float(len(item)), float(ord(item[0]))] for item in items]


def test_a_lone_query_is_encoded_at_once_in_a_batch_of_one():
    encoder = GatedEncoder()
    encoder.release.set()
    batcher = QueryBatcher(encoder)
    assert batcher.encode("moon") == [4.0, float(ord("m"))]
    assert encoder.batches == [["moon"]]


def test_queries_that_wait_together_share_one_batch_and_each_gets_its_own_vector():
    encoder = GatedEncoder()
    batcher = QueryBatcher(encoder)
    first = batcher.submit("a")
    assert encoder.started.wait(5)
    waiting = {word: batcher.submit(word) for word in ["bb", "ccc", "dddd", "eeeee"]}
    encoder.release.set()
    assert first.result(5) == [1.0, float(ord("a"))]
    assert {word: future.result(5)[0] for word, future in waiting.items()} == {"bb": 2.0, "ccc": 3.0, "dddd": 4.0, "eeeee": 5.0}
    assert encoder.batches == [["a"], ["bb", "ccc", "dddd", "eeeee"]]


def test_batches_are_capped_at_max_batch():
    encoder = GatedEncoder()
    batcher = QueryBatcher(encoder, max_batch=2)
    batcher.submit("a")
    assert encoder.started.wait(5)
    futures = [batcher.submit(w) for w in ["b", "c", "d"]]
    encoder.release.set()
    [f.result(5) for f in futures]
    assert encoder.batches == [["a"], ["b", "c"], ["d"]]


def test_one_bad_query_fails_alone_and_the_others_in_its_batch_get_their_vectors():
    encoder = GatedEncoder(fail_on="bad")
    batcher = QueryBatcher(encoder)
    batcher.submit("x")
    assert encoder.started.wait(5)
    good, bad, other = batcher.submit("good"), batcher.submit("bad"), batcher.submit("other")
    encoder.release.set()
    assert good.result(5)[0] == 4.0 and other.result(5)[0] == 5.0
    with pytest.raises(ValueError, match="cannot encode 'bad'"):
        bad.result(5)
    assert encoder.batches[1] == ["good", "bad", "other"]  # tried together first, then one by one


def test_an_encoder_returning_the_wrong_number_of_vectors_is_an_error_not_a_mixup():
    batcher = QueryBatcher(lambda items: [])
    with pytest.raises(RuntimeError, match="the encoder returned 0 vectors for 1 queries"):
        batcher.encode("one")


def test_the_worker_thread_exits_when_idle():
    batcher = QueryBatcher(lambda items: [[0.0] for _ in items], idle_seconds=0.05)
    batcher.encode("a")
    deadline = time.monotonic() + 5
    while any(t.name == "rag-query-encoder" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "rag-query-encoder" for t in threading.enumerate())
    assert batcher.encode("b") == [0.0]  # and a new one starts on demand


def test_foreign_embeddings_are_called_one_query_at_a_time():
    class Foreign:
        def __init__(self):
            self.calls = []

        def get_query_embedding(self, query):
            self.calls.append(query)
            return [float(len(query))]

    model = Foreign()
    assert query_encoder(model)(["ab", "abc"]) == [[2.0], [3.0]]
    assert model.calls == ["ab", "abc"]


@pytest.mark.parametrize("kind", ["text", "image"])
def test_batched_query_vectors_equal_one_query_vectors(shared_embeddings, kind):
    model = shared_embeddings[kind]
    queries = ["moon", "a cup of coffee on a wooden table", "who wrote one of the first compilers?"]
    batched = np.array(query_encoder(model)(queries))
    alone = np.array([model.get_query_embedding(q) for q in queries])
    cosines = (batched * alone).sum(axis=1) / (np.linalg.norm(batched, axis=1) * np.linalg.norm(alone, axis=1))
    assert cosines.min() > 0.99999


class RecordingText:
    """The tiny text model behind a gate: the first batch waits until every search has queued."""

    def __init__(self, model, expected: int):
        self.model = model
        self.batches = []
        self.queued = threading.Semaphore(0)
        self.expected = expected

    def get_query_embedding_batch(self, queries):
        if not self.batches:
            for _ in range(self.expected):  # hold the first forward pass until all searches wait
                self.queued.acquire(timeout=5)
        self.batches.append(list(queries))
        return self.model.get_query_embedding_batch(queries)


def test_concurrent_searches_share_the_text_forward_pass_and_each_gets_its_own_hits(open_test_index, corpus):
    from rag.index.ingest import ingest
    from rag.search.retriever import Retriever

    index = open_test_index()
    ingest(index, [corpus], progress=False)
    queries = ["cat that purrs", "roasted coffee beans", "satellite of the Earth", "domestic animal", "a drink"]
    alone = {q: [h.node_id for h in Retriever(index).search(q, top_k=3, image_top_k=0)] for q in queries}

    retriever = Retriever(index)
    recording = RecordingText(index.text_embedding, expected=len(queries))
    index._text_embedding = recording
    found = {}

    def search(q):
        recording.queued.release()
        found[q] = [h.node_id for h in retriever.search(q, top_k=3, image_top_k=0)]

    threads = [threading.Thread(target=search, args=(q,)) for q in queries]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert found == alone
    assert sum(len(b) for b in recording.batches) == len(queries)
    assert len(recording.batches) < len(queries)  # at least two searches shared a forward pass


def test_a_batch_runs_on_the_threads_its_queries_asked_for_and_leaves_the_default_alone():
    import torch

    default = torch.get_num_threads()
    batcher = QueryBatcher(lambda items: [torch.get_num_threads() for _ in items])
    assert batcher.encode("q") == default
    assert batcher.submit("q", threads=default + 1).result() == default + 1
    assert batcher.submit("q").result() == default  # the same worker goes back to the default
    later = {}
    thread = threading.Thread(target=lambda: later.update(threads=torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later["threads"] == default and torch.get_num_threads() == default

    gated = GatedEncoder()
    seen = []
    mixed = QueryBatcher(lambda items: seen.append(torch.get_num_threads()) or gated(items))
    first = mixed.submit("a", threads=default + 1)
    assert gated.started.wait(5)
    rest = [mixed.submit("b", threads=default + 1), mixed.submit("c", threads=default + 2)]
    gated.release.set()
    [f.result(5) for f in [first, *rest]]
    assert gated.batches == [["a"], ["b", "c"]]
    assert seen == [default + 1, default]  # queries that asked for different counts: the default


class RecordingBatcher:
    """Wraps a QueryBatcher and records the threads each query asked for."""

    def __init__(self, inner):
        self.inner = inner
        self.threads = []

    def submit(self, item, threads=0):
        self.threads.append(threads)
        return self.inner.submit(item, threads)


def test_a_text_querys_two_encoders_split_the_cores_and_other_queries_keep_them(open_test_index, settings, corpus):
    import torch

    from rag.index.ingest import ingest
    from rag.models.hub import split_threads
    from rag.search.retriever import Retriever

    assert split_threads(2) == max(1, torch.get_num_threads() // 2)
    assert split_threads(2, configured=3) == 3 and split_threads(8) >= 1
    index = open_test_index(settings.with_overrides(query_threads=3))
    ingest(index, [corpus], progress=False)
    retriever = Retriever(index)
    spies = {name: RecordingBatcher(retriever._encoder(name)) for name in ("text", "clip_text", "clip_image")}
    retriever._batchers.update(spies)
    image = next(p for p in corpus.iterdir() if p.suffix in (".jpg", ".png"))

    assert retriever.search("the moon", top_k=2, image_top_k=2)  # BGE and CLIP's text tower at once
    assert retriever.search("the moon", top_k=2, image_top_k=0)  # BGE alone
    assert retriever.search("the moon", image=image, top_k=2, image_top_k=2)  # with the vision tower
    assert spies["text"].threads == [3, 0, 0]
    assert spies["clip_text"].threads == [3, 0]
    assert spies["clip_image"].threads == [0]


def test_workers_that_change_their_threads_at_once_leave_the_default_alone():
    """Two encoders' workers start together; the default that later threads take survives them."""
    import torch

    from rag.models.hub import use_threads_here

    def default_now():
        out = []
        thread = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        return out[0]

    default = default_now()
    seen = []
    barrier = threading.Barrier(4)

    def worker(threads):
        barrier.wait()
        use_threads_here(threads)
        seen.append(torch.get_num_threads() == threads)

    for _ in range(20):
        workers = [threading.Thread(target=worker, args=(default + 1 + i % 2,)) for i in range(4)]
        [w.start() for w in workers]
        [w.join() for w in workers]
    assert all(seen) and len(seen) == 80
    assert default_now() == default
