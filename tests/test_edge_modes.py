"""LlamaIndex's hybrid, sparse and MMR query modes on QdrantEdgeVectorStore.

A six-passage corpus with hand-made 4-d vectors (axes: moon, sea, rocket, cat) and BM25 from a
signal store beside the collection, as an index keeps it. The stock `QdrantVectorStore` on
`QdrantClient(":memory:")`, given the same BM25 vectors (qdrant-edge's `Bm25`, IDF applied by
the engine), is the reference for hybrid and sparse; a textbook greedy MMR for mmr.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import uuid
import warnings
from pathlib import Path
from typing import List

import pytest
import qdrant_edge as qe
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from rag.errors import RagError
from rag.stores.edge import QdrantEdgeVectorStore
from rag.stores.edge_modes import (
    check_mode,
    hybrid_limits,
    min_max,
    mmr_settings,
    relative_score_fusion,
)
from rag.stores.signals import AVG_LEN, SignalPoint, SignalStore

HYBRID, SPARSE, MMR = VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.MMR


def unit(v: List[float]) -> List[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


DOCS = [  # text, vector (moon, sea, rocket, cat), topic
    ("The Moon orbits the Earth and pulls the tides.", [1, 0.3, 0, 0], "astro"),
    ("Lunar phases change as the Moon orbits.", [0.95, 0.05, 0.1, 0], "astro"),
    ("Apollo 11 landed on the Moon; Armstrong walked first.", [0.7, 0, 0.6, 0], "history"),
    ("Ocean waves crash on the shore.", [0.1, 1, 0, 0], "sea"),
    ("Saturn V was the rocket of the Apollo program.", [0.2, 0, 1, 0], "history"),
    ("A cat sleeps on the warm windowsill.", [0, 0, 0, 1], "pets"),
]
ID = [str(uuid.UUID(int=i + 1)) for i in range(len(DOCS))]
MOON = unit([1, 0.2, 0, 0])
ROCKET = unit([0.3, 0, 1, 0])


def nodes() -> List[TextNode]:
    return [TextNode(id_=ID[i], text=text, embedding=unit(vec), metadata={"n": i, "topic": topic},
                     excluded_embed_metadata_keys=["n", "topic"])
            for i, (text, vec, topic) in enumerate(DOCS)]


def build(root: Path) -> None:
    """A collection at root/edge/text and its signals at root/signals/text, both closed."""
    with QdrantEdgeVectorStore(root / "edge" / "text") as store:
        store.add(nodes())
    signals = SignalStore(root / "signals" / "text", "text")
    signals.add([SignalPoint(n.node_id, "doc", n.metadata, n.text) for n in nodes()])
    signals.close()


@pytest.fixture
def edge(tmp_path):
    build(tmp_path)
    with QdrantEdgeVectorStore(tmp_path / "edge" / "text") as store:
        yield store


def q(query_str=None, embedding=MOON, k=4, mode=HYBRID, **fields) -> VectorStoreQuery:
    return VectorStoreQuery(query_embedding=embedding, query_str=query_str, similarity_top_k=k, mode=mode, **fields)


def order(result: VectorStoreQueryResult) -> List[int]:
    """Result as corpus positions, checking that ids are node ids and nodes match them."""
    assert result.ids == [n.node_id for n in result.nodes]
    return [ID.index(i) for i in result.ids]


# -- the arithmetic ----------------------------------------------------------------------------
def test_min_max():
    assert min_max([]) == []
    assert min_max([3.0]) == [1.0] and min_max([2.0, 2.0]) == [1.0, 1.0]
    assert min_max([1.0, 3.0, 2.0]) == [0.0, 1.0, 0.5]


def same(got, expected) -> bool:
    """Fused rankings equal: ids exactly, scores to float precision."""
    return [i for i, _ in got] == [i for i, _ in expected] and [s for _, s in got] == pytest.approx(
        [s for _, s in expected])


def test_relative_score_fusion_by_hand():
    dense = [("a", 0.9), ("b", 0.7), ("c", 0.4)]  # scaled: a 1, b 0.6, c 0
    sparse = [("c", 6.0), ("a", 3.0), ("d", 2.0)]  # scaled: c 1, a 0.25, d 0
    assert same(relative_score_fusion(dense, sparse, 0.5), [("a", 0.625), ("c", 0.5), ("b", 0.3), ("d", 0.0)])
    assert same(relative_score_fusion(dense, sparse, 0.8), [("a", 0.85), ("b", 0.48), ("c", 0.2), ("d", 0.0)])
    assert same(relative_score_fusion(dense, sparse, 0.3), [("c", 0.7), ("a", 0.475), ("b", 0.18), ("d", 0.0)])
    assert same(relative_score_fusion(dense, sparse, 0.5, limit=2), [("a", 0.625), ("c", 0.5)])


def test_ties_follow_the_heavier_leg():
    dense = [("a", 0.9), ("b", 0.7), ("c", 0.5)]
    sparse = [("c", 6.0), ("d", 3.0), ("a", 2.0)]
    assert same(relative_score_fusion(dense, sparse, 0.5), [("a", 0.5), ("c", 0.5), ("b", 0.25), ("d", 0.125)])
    assert same(relative_score_fusion(dense, sparse, 1.0), [("a", 1.0), ("b", 0.5), ("c", 0.0), ("d", 0.0)])
    assert same(relative_score_fusion(dense, sparse, 0.0), [("c", 1.0), ("d", 0.25), ("a", 0.0), ("b", 0.0)])
    # a leg of one hit scales to 1 (the stock code would add its raw BM25 score)
    assert same(relative_score_fusion([("a", 0.9), ("b", 0.1)], [("b", 7.5)], 0.5), [("a", 0.5), ("b", 0.5)])
    with pytest.raises(ValueError, match=r"alpha must be between 0 \(BM25 only\) and 1 \(dense only\), got 1.5"):
        relative_score_fusion(dense, sparse, 1.5)


def test_relative_score_fusion_matches_stock_where_nothing_ties():
    from llama_index.vector_stores.qdrant.utils import relative_score_fusion as stock_fusion

    def result(pairs):
        return VectorStoreQueryResult(nodes=[TextNode(id_=i, text=i) for i, _ in pairs],
                                      similarities=[s for _, s in pairs], ids=[i for i, _ in pairs])

    dense = [("a", 0.9), ("b", 0.7), ("c", 0.4), ("e", 0.35)]
    sparse = [("c", 6.0), ("a", 3.0), ("f", 2.5), ("d", 2.0)]
    for alpha in (0.2, 0.5, 0.65, 0.9):  # the top 4: d and e tie at 0 below them
        stock = stock_fusion(result(dense), result(sparse), alpha=alpha, top_k=4)
        ours = relative_score_fusion(dense, sparse, alpha, limit=4)
        assert [i for i, _ in ours] == stock.ids
        assert [s for _, s in ours] == pytest.approx(stock.similarities)


def test_mode_settings():
    base = VectorStoreQuery(similarity_top_k=3)
    assert hybrid_limits(base) == (3, 3, 3, 0.5)
    assert hybrid_limits(VectorStoreQuery(similarity_top_k=3, sparse_top_k=7, hybrid_top_k=2, alpha=0.0)) == (3, 7, 2, 0.0)
    assert mmr_settings(base, {}) == (0.5, 12)
    assert mmr_settings(VectorStoreQuery(similarity_top_k=3, mmr_threshold=0.7), {}) == (0.7, 12)
    assert mmr_settings(VectorStoreQuery(similarity_top_k=3, mmr_threshold=0.7), {"mmr_threshold": 0.2}) == (0.2, 12)
    assert mmr_settings(base, {"mmr_prefetch_k": 40}) == (0.5, 40)
    assert mmr_settings(base, {"mmr_prefetch_k": 2}) == (0.5, 3)  # never fewer than asked for
    assert mmr_settings(base, {"mmr_prefetch_factor": 2.5}) == (0.5, 8)
    with pytest.raises(ValueError, match="give mmr_prefetch_k or mmr_prefetch_factor, not both"):
        mmr_settings(base, {"mmr_prefetch_k": 5, "mmr_prefetch_factor": 2})
    with pytest.raises(ValueError, match=r"mmr_threshold must be between 0 \(diversity first\) and 1 "
                                         r"\(relevance only\), got 1.5"):
        mmr_settings(base, {"mmr_threshold": 1.5})
    with pytest.raises(ValueError, match="mmr_prefetch_k must be a positive integer, got 0"):
        mmr_settings(base, {"mmr_prefetch_k": 0})
    with pytest.raises(ValueError) as err:
        check_mode(VectorStoreQueryMode.TEXT_SEARCH)
    assert str(err.value) == ("QdrantEdgeVectorStore runs the query modes 'default', 'hybrid', 'sparse', "
                              "'mmr'; got 'text_search'.")


# -- against the stock QdrantVectorStore ---------------------------------------------------------
@pytest.fixture
def stock():
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient, models

    bm25 = qe.Bm25(qe.Bm25Config(language="english", avg_len=AVG_LEN["text"]))

    def encoder(embed):
        def encode(texts):
            vectors = [embed(t) for t in texts]
            return [list(v.indices) for v in vectors], [list(v.values) for v in vectors]
        return encode

    client = QdrantClient(":memory:")
    store = QdrantVectorStore(collection_name="c", client=client, enable_hybrid=True,
                              sparse_doc_fn=encoder(bm25.embed_document), sparse_query_fn=encoder(bm25.embed_query),
                              sparse_config=models.SparseVectorParams(modifier=models.Modifier.IDF))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store.add(nodes())
    yield store
    client.close()


@pytest.mark.parametrize("text, embedding", [("Armstrong and Apollo moon", MOON), ("Saturn rocket to the Moon", ROCKET),
                                             ("ocean tides", unit([0.5, 1, 0, 0]))])
def test_hybrid_and_sparse_match_the_stock_store(edge, stock, text, embedding):
    for alpha in (None, 0.3, 0.8):
        ours = edge.query(q(text, embedding, alpha=alpha))
        theirs = stock.query(q(text, embedding, alpha=alpha))
        assert ours.ids == theirs.ids, alpha
        assert ours.similarities == pytest.approx(theirs.similarities, abs=1e-5)
    ours, theirs = edge.query(q(text, embedding, mode=SPARSE)), stock.query(q(text, embedding, mode=SPARSE))
    assert len(ours.ids) >= 2
    # BM25 with the engine's IDF: the same scores (the order of equal scores may differ)
    assert dict(zip(ours.ids, ours.similarities)) == pytest.approx(dict(zip(theirs.ids, theirs.similarities)), abs=1e-4)
    dense = edge.query(q(text, embedding, mode=VectorStoreQueryMode.DEFAULT))
    assert dense.ids == stock.query(q(text, embedding, mode=VectorStoreQueryMode.DEFAULT)).ids


# -- rankings on the hand-made corpus ----------------------------------------------------------
def test_a_rare_word_only_bm25_finds_ranks_first_in_hybrid(edge):
    dense = edge.query(q(mode=VectorStoreQueryMode.DEFAULT))
    assert order(dense) == [0, 1, 2, 3]
    hybrid = edge.query(q("Armstrong"))
    assert order(hybrid) == [2, 0, 1, 3]
    s = dense.similarities  # passage 2: scaled dense score, plus the whole (single-hit) BM25 leg
    assert hybrid.similarities[0] == pytest.approx(0.5 * (s[2] - s[3]) / (s[0] - s[3]) + 0.5)
    assert hybrid.similarities[1:] == pytest.approx([0.5, 0.5 * (s[1] - s[3]) / (s[0] - s[3]), 0.0])
    assert order(edge.query(q("Armstrong", mode=SPARSE))) == [2]


@pytest.mark.parametrize("text", ["Armstrong and Apollo moon", "Apollo moon orbits", "Armstrong", "waves on the shore"])
def test_alpha_one_is_the_dense_order_and_zero_the_bm25_order(edge, text):
    dense = order(edge.query(q(text, mode=VectorStoreQueryMode.DEFAULT)))
    sparse = order(edge.query(q(text, mode=SPARSE)))
    assert order(edge.query(q(text, alpha=1.0))) == dense
    only_bm25 = order(edge.query(q(text, alpha=0.0)))
    assert only_bm25[: len(sparse)] == sparse
    assert only_bm25[len(sparse):] == [i for i in dense if i not in sparse][: 4 - len(sparse)]


def test_sparse_top_k_and_hybrid_top_k(edge):
    # dense leg: 0, 1; BM25 leg of one: 2 (scaled to 1); fused at 0.5: 0 and 2 tie, the dense order first
    result = edge.query(q("Armstrong and Apollo moon", k=2, sparse_top_k=1, hybrid_top_k=3))
    assert order(result) == [0, 2, 1]
    assert result.similarities == pytest.approx([0.5, 0.5, 0.0])
    assert order(edge.query(q("Armstrong and Apollo moon", k=4, hybrid_top_k=2))) == [2, 0]


def test_a_query_without_words_bm25_keeps_is_a_dense_query(tmp_path):
    with QdrantEdgeVectorStore(tmp_path / "edge" / "text") as store:  # no signals at all
        store.add(nodes())
        dense = store.query(q(mode=VectorStoreQueryMode.DEFAULT))
        for text in (None, ""):
            result = store.query(q(text))
            assert result.ids == dense.ids and result.similarities == dense.similarities
    build(tmp_path / "built")
    with QdrantEdgeVectorStore(tmp_path / "built" / "edge" / "text") as store:
        result = store.query(q("the of and"))  # stop words only: no BM25 leg
        assert result.ids == dense.ids and result.similarities == pytest.approx(dense.similarities)
        assert store.query(q("the of and", mode=SPARSE)).ids == []
        with pytest.raises(ValueError, match="query.query_str is empty: sparse mode ranks nodes by BM25"):
            store.query(q(None, mode=SPARSE))


def textbook_mmr(query: List[float], vectors: List[List[float]], lam: float, k: int) -> List[int]:
    """Greedy MMR: the most similar item first, then each time the item with the highest
    lam * sim(query, d) - (1 - lam) * max sim(d, chosen)."""
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    chosen = [max(range(len(vectors)), key=lambda i: cos(query, vectors[i]))]
    while len(chosen) < k:
        rest = [i for i in range(len(vectors)) if i not in chosen]
        chosen.append(max(rest, key=lambda i: lam * cos(query, vectors[i])
                          - (1 - lam) * max(cos(vectors[i], vectors[j]) for j in chosen)))
    return chosen


def test_mmr_is_textbook_mmr_with_lambda_the_threshold(edge):
    vectors = [unit(vec) for _, vec, _ in DOCS]
    dense = edge.query(q(mode=VectorStoreQueryMode.DEFAULT, k=6))
    similarity = dict(zip(dense.ids, dense.similarities))
    for threshold in (0.0, 0.25, 0.5, 0.75, 1.0):
        for embedding in (MOON, ROCKET):
            result = edge.query(q(embedding=embedding, mode=MMR), mmr_threshold=threshold)
            assert order(result) == textbook_mmr(embedding, vectors, threshold, 4), (threshold, embedding)
    result = edge.query(q(mode=MMR), mmr_threshold=1.0)
    assert order(result) == [0, 1, 2, 3]  # relevance only: the dense order
    diverse = edge.query(q(mode=MMR, k=3), mmr_threshold=0.5)
    assert order(diverse) == [0, 1, 5]  # the cat, last by plain similarity, for variety
    assert diverse.similarities == pytest.approx([similarity[i] for i in diverse.ids])  # cosine to the query
    assert order(edge.query(q(mode=MMR, k=3, mmr_threshold=0.5))) == [0, 1, 5]  # the query's own field
    assert order(edge.query(q(mode=MMR, k=3))) == [0, 1, 5]  # LlamaIndex's default threshold: 0.5
    # candidates: only the 3 nearest (mmr_prefetch_k) leave the cat out
    assert 5 not in order(edge.query(q(mode=MMR, k=3), mmr_threshold=0.5, mmr_prefetch_k=3))


def test_filters_apply_to_every_leg(edge):
    history = MetadataFilters(filters=[MetadataFilter(key="topic", value="history")])
    for mode in (HYBRID, SPARSE, MMR, VectorStoreQueryMode.DEFAULT):
        result = edge.query(q("Armstrong and Apollo moon", mode=mode, filters=history))
        assert sorted(order(result)) == [2, 4], mode
    not_history = MetadataFilters(filters=[MetadataFilter(key="topic", value="history")], condition=FilterCondition.NOT)
    for alpha in (0.0, 0.5):
        assert not {2, 4} & set(order(edge.query(q("Armstrong Apollo", alpha=alpha, filters=not_history))))
    assert order(edge.query(q("Armstrong Apollo", mode=SPARSE, filters=not_history))) == []
    restricted = order(edge.query(q("Armstrong Apollo", node_ids=[ID[0], ID[4]], alpha=0.0)))
    assert restricted == [4, 0]
    assert order(edge.query(q("Armstrong Apollo", doc_ids=["another"]))) == []


def test_bm25_hits_whose_nodes_are_gone_are_skipped(edge):
    edge.delete_nodes([ID[2]])  # the signal store still has it (the index deletes from both)
    assert 2 not in order(edge.query(q("Armstrong")))
    assert order(edge.query(q("Armstrong", mode=SPARSE))) == []


# -- where the signals come from -----------------------------------------------------------------
def test_an_index_built_before_the_signals_is_refused_with_the_command(tmp_path):
    build(tmp_path)
    shutil.rmtree(tmp_path / "signals")
    storage = tmp_path.resolve()
    expected = (f"Hybrid and sparse queries need the BM25 signals of the index in {storage}, which was built "
                f"before them. Add them (no image is embedded again) with: rag migrate --signals --storage {storage}")
    with QdrantEdgeVectorStore(tmp_path / "edge" / "text") as store:
        for mode in (HYBRID, SPARSE):
            with pytest.raises(RagError) as err:
                store.query(q("Armstrong", mode=mode))
            assert str(err.value) == expected
        assert order(store.query(q(mode=MMR, k=2))) == [0, 1]  # MMR needs no signals

    with QdrantEdgeVectorStore(tmp_path / "loose") as store:
        store.add(nodes())
        with pytest.raises(RagError) as err:
            store.query(q("Armstrong"))
    assert str(err.value) == (
        f"Hybrid and sparse queries need BM25 signals, and the store at {(tmp_path / 'loose').resolve()} has none: "
        "it is not in a rag storage folder (<storage>/edge/<collection>, signals in "
        "<storage>/signals/<collection>) and none were given (QdrantEdgeVectorStore(path, signals=SignalStore(...))).")

    with QdrantEdgeVectorStore(tmp_path / "empty" / "edge" / "text") as store:  # nothing indexed yet
        assert store.query(q("Armstrong")).ids == []


def test_signals_given_or_opened_beside_the_store(tmp_path):
    build(tmp_path)
    store = QdrantEdgeVectorStore(tmp_path / "edge" / "text")
    assert order(store.query(q("Armstrong"))) == [2, 0, 1, 3]  # opened <storage>/signals/text itself
    with pytest.raises(RagError, match="is in use by another process"):
        SignalStore(tmp_path / "signals" / "text", "text")  # one handle per shard, and the store holds it
    store.use_signals(None)  # closes the one it opened...
    handle = SignalStore(tmp_path / "signals" / "text", "text")  # ...so it can be handed over
    store.use_signals(handle)
    assert order(store.query(q("Armstrong"))) == [2, 0, 1, 3]
    store.close()
    assert handle.count() == 6  # a given handle belongs to the giver: still open
    handle.close()
    with QdrantEdgeVectorStore(tmp_path / "edge" / "text", signals=lambda: None) as again:
        assert order(again.query(q("Armstrong", mode=SPARSE))) == [2]  # a callable giving None: opened beside


# -- through LlamaIndex ----------------------------------------------------------------------------
class WordVectors(BaseEmbedding):
    """Hand-made query vectors: 'Armstrong' and the Moon point at the moon axis, rockets at the rocket one."""

    def _vector(self, text: str) -> List[float]:
        return ROCKET if "rocket" in text.lower() else MOON

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._vector(text)


def test_modes_through_vector_store_index(edge):
    index = VectorStoreIndex.from_vector_store(edge, embed_model=WordVectors())

    def ids(retriever, text):
        return [ID.index(n.node.node_id) for n in retriever.retrieve(text)]

    assert ids(index.as_retriever(similarity_top_k=4), "Armstrong") == [0, 1, 2, 3]
    hybrid = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=4, alpha=0.5)
    assert ids(hybrid, "Armstrong") == [2, 0, 1, 3]
    got = asyncio.run(hybrid.aretrieve("Armstrong"))
    assert [ID.index(n.node.node_id) for n in got] == [2, 0, 1, 3]
    assert ids(index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=4, alpha=1.0), "Armstrong") == [0, 1, 2, 3]
    assert ids(index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=2, sparse_top_k=1,
                                  hybrid_top_k=3), "Armstrong and Apollo moon") == [0, 2, 1]
    assert ids(index.as_retriever(vector_store_query_mode="sparse", similarity_top_k=4), "Apollo rocket") == [4, 2]
    mmr = index.as_retriever(vector_store_query_mode="mmr", similarity_top_k=3, vector_store_kwargs={"mmr_threshold": 0.5})
    assert ids(mmr, "Armstrong") == [0, 1, 5]
    relevance = index.as_retriever(vector_store_query_mode="mmr", similarity_top_k=3,
                                   vector_store_kwargs={"mmr_threshold": 1.0})
    assert ids(relevance, "Armstrong") == [0, 1, 2]
    history = MetadataFilters(filters=[MetadataFilter(key="topic", value="history")])
    assert sorted(ids(index.as_retriever(vector_store_query_mode="hybrid", filters=history, similarity_top_k=4),
                      "Armstrong rocket")) == [2, 4]


def test_an_index_hands_its_signal_handles_to_its_stores(open_test_index, settings, corpus):
    from rag.index.ingest import ingest
    from rag.index.signals import upgrade_signals

    index = open_test_index()
    ingest(index, [corpus], progress=False)
    text = index.stores.text
    vector = index.text_embedding.get_query_embedding("what purrs?")
    purrs = VectorStoreQuery(query_embedding=vector, query_str="what purrs?", similarity_top_k=3, mode=SPARSE)
    assert [n.metadata["title"] for n in text.query(purrs).nodes] == ["Cat"]  # the index's own handle
    hybrid = text.query(VectorStoreQuery(query_embedding=vector, query_str="what purrs?", similarity_top_k=3,
                                         mode=HYBRID, alpha=0.0))
    assert hybrid.nodes[0].metadata["title"] == "Cat" and len(hybrid.ids) == 3
    retriever = index.as_llama_index().as_retriever(vector_store_query_mode="hybrid", alpha=0.0,
                                                    similarity_top_k=2, image_similarity_top_k=1)
    found = retriever.retrieve("what purrs?")  # both collections, each with its own signals
    assert found[0].node.metadata["title"] == "Cat" and len(found) == 3
    upgrade_signals(index)  # replaces the index's handles: the store follows
    assert [n.metadata["title"] for n in text.query(purrs).nodes] == ["Cat"]
    index.close()

    shutil.rmtree(settings.storage / "signals")
    index = open_test_index()
    with pytest.raises(RagError, match=r"rag migrate --signals --storage " + str(settings.storage.resolve())):
        index.stores.text.query(purrs)
