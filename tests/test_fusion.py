"""The pure fusion arithmetic, by hand and against the Qdrant engine's own Fusion queries."""

from __future__ import annotations

import random

import pytest

from rag.search.fusion import Fused, dbsf, fuse, ids, rrf, rrf_score, with_minimums


def test_rrf_by_hand():
    lists = {"dense": [("a", 0.9), ("b", 0.8), ("c", 0.1)], "bm25": [("c", 7.0), ("a", 2.0)]}
    fused = rrf(lists, k=60)
    # a: 1/60 + 1/61; c: 1/62 + 1/60; b: 1/61
    assert ids(fused) == ["a", "c", "b"]
    assert fused[0].score == pytest.approx(1 / 60 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 62 + 1 / 60)
    assert fused[2].score == pytest.approx(1 / 61)
    assert fused[1].signals == {"dense": {"rank": 3, "score": 0.1}, "bm25": {"rank": 1, "score": 7.0}}
    assert fused[2].signals == {"dense": {"rank": 2, "score": 0.8}}


def test_rrf_weights_follow_qdrant():
    # Qdrant: 1 / ((position + 1) / weight + k - 1)
    assert rrf_score(0, 60, 2.0) == pytest.approx(1 / 59.5)
    assert rrf_score(4, 60, 2.0) == pytest.approx(1 / 61.5)
    assert rrf_score(3, 60, 1.0) == pytest.approx(1 / 63)
    lists = {"x": [("a", 1.0), ("b", 0.5)], "y": [("b", 1.0), ("a", 0.5)]}
    # with k = 60 a weight barely moves the score: a = 1/60 + 1/(2/3 + 59) beats b = 1/61 + 1/(1/3 + 59)
    assert ids(rrf(lists, weights={"y": 3.0})) == ["a", "b"]
    # with k = 1 it decides: a = 1 + 1.5, b = 0.5 + 3
    fused = rrf(lists, k=1, weights={"y": 3.0})
    assert ids(fused) == ["b", "a"] and [f.score for f in fused] == pytest.approx([3.5, 2.5])


def test_rrf_rejects_bad_input():
    with pytest.raises(ValueError, match="weights given for signals that have no list: z"):
        rrf({"x": [("a", 1.0)]}, weights={"z": 2.0})
    with pytest.raises(ValueError, match="signal weights must be positive: x=0.0"):
        rrf({"x": [("a", 1.0)]}, weights={"x": 0})
    with pytest.raises(ValueError, match="RRF k must be at least 1, got 0"):
        rrf({"x": [("a", 1.0)]}, k=0)
    with pytest.raises(ValueError, match="unknown fusion method 'sum'"):
        fuse({"x": [("a", 1.0)]}, method="sum")


def test_dbsf_by_hand():
    # list x: scores 3, 2, 1 -> mean 2, sample sd 1 -> (s - (2 - 3)) / 6: 4/6, 3/6, 2/6
    # list y: one score -> 0.5
    fused = dbsf({"x": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "y": [("c", 100.0)]})
    assert ids(fused) == ["c", "a", "b"]
    assert [f.score for f in fused] == pytest.approx([2 / 6 + 0.5, 4 / 6, 3 / 6])
    equal = dbsf({"x": [("a", 1.0), ("b", 1.0)]})
    assert [f.score for f in equal] == [0.5, 0.5]


def test_a_repeated_id_in_one_list_counts_once():
    fused = rrf({"x": [("a", 1.0), ("a", 0.9), ("b", 0.5)]})
    assert fused[0].score == pytest.approx(1 / 60)
    assert fused[1].signals["x"]["rank"] == 3


def _kinds(fused):
    return lambda f: "image" if str(f.id).startswith("img") else "text"


def test_with_minimums_promotes_the_best_image():
    ranked = [Fused(f"t{i}", 1.0 - i / 10) for i in range(6)] + [Fused("img1", 0.2), Fused("img2", 0.1)]
    top = with_minimums(ranked, _kinds(ranked), limit=4, minimums={"image": 1})
    assert ids(top) == ["t0", "t1", "t2", "img1"]
    top = with_minimums(ranked, _kinds(ranked), limit=4, minimums={"image": 2})
    assert ids(top) == ["t0", "t1", "img1", "img2"]
    # nothing to promote: the top stays as it is
    top = with_minimums(ranked[:6], _kinds(ranked), limit=4, minimums={"image": 1})
    assert ids(top) == ["t0", "t1", "t2", "t3"]
    # already satisfied
    mixed = [Fused("img0", 1.0)] + ranked
    assert ids(with_minimums(mixed, _kinds(mixed), limit=3, minimums={"image": 1})) == ["img0", "t0", "t1"]


def test_with_minimums_keeps_the_other_kinds_minimum():
    ranked = [Fused("t0", 1.0), Fused("img1", 0.9), Fused("img2", 0.8), Fused("img3", 0.7), Fused("t1", 0.1)]
    top = with_minimums(ranked, _kinds(ranked), limit=3, minimums={"image": 1, "text": 2})
    assert ids(top) == ["t0", "img1", "t1"]
    with pytest.raises(ValueError, match=r"the minimums \(2 image, 2 text\) add up to more than the 3 results"):
        with_minimums(ranked, _kinds(ranked), limit=3, minimums={"image": 2, "text": 2})


# -- against the engine ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    qe = pytest.importorskip("qdrant_edge")
    path = tmp_path_factory.mktemp("fusion-shard")
    config = qe.EdgeConfig(
        vectors={"dense": qe.EdgeVectorParams(size=8, distance=qe.Distance.Cosine)},
        sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
    )
    engine = qe.EdgeShard.create(str(path), config)
    bm25 = qe.Bm25(qe.Bm25Config(language="english"))
    words = "cat dog rocket moon coffee horse coin palace flower camera retina galaxy".split()
    rng = random.Random(7)
    points = []
    for i in range(60):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        vector = [rng.gauss(0, 1) for _ in range(8)]
        points.append(qe.Point(i + 1, {"dense": vector, "bm25": bm25.embed_document(text)}, {"text": text}))
    engine.update(qe.UpdateOperation.upsert_points(points))
    yield qe, engine, bm25, rng
    engine.close()


def _legs(qe, engine, vector, sparse, limit):
    dense = engine.query(qe.QueryRequest(limit=limit, query=qe.Query.Nearest(vector, using="dense")))
    lexical = engine.query(qe.QueryRequest(limit=limit, query=qe.Query.Nearest(sparse, using="bm25")))
    prefetches = [qe.Prefetch(limit=limit, query=qe.Query.Nearest(vector, using="dense")),
                  qe.Prefetch(limit=limit, query=qe.Query.Nearest(sparse, using="bm25"))]
    return {"dense": [(p.id, p.score) for p in dense], "bm25": [(p.id, p.score) for p in lexical]}, prefetches


@pytest.mark.parametrize("weights", [None, [2.0, 1.0], [1.0, 3.0]])
def test_rrf_matches_the_engine(shard, weights):
    qe, engine, bm25, rng = shard
    for query in ("cat moon", "coffee rocket horse", "galaxy"):
        vector = [rng.gauss(0, 1) for _ in range(8)]
        lists, prefetches = _legs(qe, engine, vector, bm25.embed_query(query), 20)
        got = engine.query(qe.QueryRequest(limit=40, prefetches=prefetches, query=qe.Fusion.Rrf(k=60, weights=weights)))
        named = dict(zip(("dense", "bm25"), weights)) if weights else None
        ours = rrf(lists, k=60, weights=named)
        assert {p.id: p.score for p in got} == pytest.approx({f.id: f.score for f in ours}, rel=1e-5)


def test_dbsf_matches_the_engine(shard):
    qe, engine, bm25, rng = shard
    for query in ("cat moon", "coffee rocket horse", "galaxy"):
        vector = [rng.gauss(0, 1) for _ in range(8)]
        lists, prefetches = _legs(qe, engine, vector, bm25.embed_query(query), 20)
        got = engine.query(qe.QueryRequest(limit=40, prefetches=prefetches, query=qe.Fusion.Dbsf()))
        ours = dbsf(lists)
        assert {p.id: p.score for p in got} == pytest.approx({f.id: f.score for f in ours}, rel=1e-4)
