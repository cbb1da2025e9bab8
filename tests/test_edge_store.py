"""QdrantEdgeVectorStore: congruence with the stock QdrantVectorStore, persistence, locking.

Congruence tests run the same calls through QdrantEdgeVectorStore (exact search) and
through LlamaIndex's QdrantVectorStore on QdrantClient(":memory:") and compare ids in
order; every case is also checked against a numpy + Python reference, which covers the
operators the stock store rejects (any, all, contains, float !=, ...). No models.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest
from llama_index.core.schema import (
    ImageNode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from rag.errors import StorageError
from rag.stores import QdrantEdgeVectorStore, build_filter, point_id_for

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

DIM = 8
N = 60
REPO = Path(__file__).resolve().parents[1]

COLORS = ["red", "green", "blue"]
TITLES = ["Quick brown Fox", "lazy dog", "The red fox jumps", "Brown bear", "sleepy Cat"]


def _metadata(i: int) -> Dict[str, Any]:
    m: Dict[str, Any] = {
        "year": 2000 + i % 7,
        "score": (i % 8) * 0.5,
        "flag": i % 2 == 0,
        "tags": [t for bit, t in enumerate("abc") if (i % 8) >> bit & 1],
        "title": TITLES[i % 5],
        "date": f"2024-{1 + i % 12:02d}-15T00:00:00Z",
        "nullable": None if i % 4 == 0 else "v",
    }
    if i % 10 != 9:  # some nodes have no color at all
        m["color"] = COLORS[i % 3]
    return m


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def make_nodes(n: int = N, seed: int = 0, dim: int = DIM) -> List[TextNode]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim))
    return [
        TextNode(
            id_=_uuid(i),
            text=f"chunk {i}",
            metadata=_metadata(i),
            embedding=vecs[i].tolist(),
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc{i % 4}")},
        )
        for i in range(n)
    ]


def query_vectors(k: int = 5, seed: int = 1, dim: int = DIM) -> List[List[float]]:
    return np.random.default_rng(seed).standard_normal((k, dim)).tolist()


def reference_ids(
    nodes: List[TextNode], q: List[float], k: int, pred: Callable[[dict], bool]
) -> List[str]:
    """Exact cosine top-k among nodes whose metadata satisfies ``pred``."""
    keep = [n for n in nodes if pred(n.metadata)]
    if not keep:
        return []
    X = np.array([n.embedding for n in keep])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    qv = np.array(q) / np.linalg.norm(q)
    order = np.argsort(-(X @ qv), kind="stable")[:k]
    return [keep[j].node_id for j in order]


@pytest.fixture()
def edge(tmp_path):
    store = QdrantEdgeVectorStore(tmp_path / "edge", exact=True)
    yield store
    store.close()


@pytest.fixture()
def stock():
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    yield QdrantVectorStore(client=client, collection_name="c")
    client.close()


def F(key: str, value: Any, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


def Fs(*filters: Any, condition: FilterCondition = FilterCondition.AND) -> MetadataFilters:
    return MetadataFilters(filters=list(filters), condition=condition)


def _has(m: dict, key: str) -> bool:
    return key in m and m[key] is not None and m[key] != []


# (id, filters, python predicate, does the stock QdrantVectorStore support it?)
CASES = [
    ("eq_str", Fs(F("color", "red")), lambda m: m.get("color") == "red", True),
    ("eq_int", Fs(F("year", 2003)), lambda m: m["year"] == 2003, True),
    ("eq_float", Fs(F("score", 1.5)), lambda m: m["score"] == 1.5, True),
    ("eq_none", Fs(F("nullable", None)), lambda m: m["nullable"] is None, False),
    ("ne_str", Fs(F("color", "red", FilterOperator.NE)),
     lambda m: _has(m, "color") and m["color"] != "red", True),
    ("ne_int", Fs(F("year", 2003, FilterOperator.NE)), lambda m: m["year"] != 2003, True),
    ("ne_float", Fs(F("score", 1.5, FilterOperator.NE)), lambda m: m["score"] != 1.5, False),
    ("gt_int", Fs(F("year", 2003, FilterOperator.GT)), lambda m: m["year"] > 2003, True),
    ("gte_int", Fs(F("year", 2003, FilterOperator.GTE)), lambda m: m["year"] >= 2003, True),
    ("lt_float", Fs(F("score", 1.5, FilterOperator.LT)), lambda m: m["score"] < 1.5, True),
    ("lte_float", Fs(F("score", 1.5, FilterOperator.LTE)), lambda m: m["score"] <= 1.5, True),
    ("gt_datetime", Fs(F("date", "2024-06-01T00:00:00Z", FilterOperator.GT)),
     lambda m: m["date"] > "2024-06-01T00:00:00Z", False),
    ("lte_datetime", Fs(F("date", "2024-03-15", FilterOperator.LTE)),
     lambda m: m["date"] <= "2024-03-15T00:00:00Z", False),
    ("in_str", Fs(F("color", ["red", "blue"], FilterOperator.IN)),
     lambda m: m.get("color") in ("red", "blue"), True),
    ("in_str_commas", Fs(F("color", "red,blue", FilterOperator.IN)),
     lambda m: m.get("color") in ("red", "blue"), True),
    ("in_int", Fs(F("year", [2001, 2005], FilterOperator.IN)),
     lambda m: m["year"] in (2001, 2005), True),
    ("in_float", Fs(F("score", [0.5, 3.5], FilterOperator.IN)),
     lambda m: m["score"] in (0.5, 3.5), False),
    ("nin_str", Fs(F("color", ["red", "blue"], FilterOperator.NIN)),
     lambda m: _has(m, "color") and m["color"] not in ("red", "blue"), True),
    ("nin_int", Fs(F("year", [2001, 2005], FilterOperator.NIN)),
     lambda m: m["year"] not in (2001, 2005), True),
    ("any_tags", Fs(F("tags", ["a", "c"], FilterOperator.ANY)),
     lambda m: bool({"a", "c"} & set(m["tags"])), False),
    ("all_tags", Fs(F("tags", ["a", "b"], FilterOperator.ALL)),
     lambda m: {"a", "b"} <= set(m["tags"]), False),
    ("contains_tag", Fs(F("tags", "b", FilterOperator.CONTAINS)), lambda m: "b" in m["tags"], False),
    ("text_match", Fs(F("title", "fox", FilterOperator.TEXT_MATCH)),
     lambda m: "fox" in m["title"].lower().split(), True),
    ("text_match_insensitive", Fs(F("title", "BROWN", FilterOperator.TEXT_MATCH_INSENSITIVE)),
     lambda m: "brown" in m["title"].lower().split(), True),
    ("is_empty_missing", Fs(F("color", None, FilterOperator.IS_EMPTY)),
     lambda m: not _has(m, "color"), True),
    ("is_empty_list", Fs(F("tags", None, FilterOperator.IS_EMPTY)), lambda m: m["tags"] == [], True),
    ("is_empty_null", Fs(F("nullable", None, FilterOperator.IS_EMPTY)),
     lambda m: m["nullable"] is None, True),
    ("and", Fs(F("color", "red"), F("year", 2003, FilterOperator.GTE)),
     lambda m: m.get("color") == "red" and m["year"] >= 2003, True),
    ("or", Fs(F("color", "red"), F("year", 2003), condition=FilterCondition.OR),
     lambda m: m.get("color") == "red" or m["year"] == 2003, True),
    ("not", Fs(F("color", "red"), F("year", 2003), condition=FilterCondition.NOT),
     lambda m: not (m.get("color") == "red" or m["year"] == 2003), True),
    ("nested", Fs(
        F("color", ["red", "green"], FilterOperator.IN),
        Fs(F("year", 2002, FilterOperator.LT), F("score", 3.0, FilterOperator.GTE),
           condition=FilterCondition.OR),
        Fs(F("year", 2004), condition=FilterCondition.NOT),
        Fs(),  # empty groups are skipped
    ), lambda m: m.get("color") in ("red", "green")
        and (m["year"] < 2002 or m["score"] >= 3.0) and m["year"] != 2004, True),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_filtered_query_congruence(case, edge, stock):
    name, filters, pred, stock_ok = case
    nodes = make_nodes()
    edge.add(nodes)
    stock.add(make_nodes())
    assert sum(map(pred, (n.metadata for n in nodes))) > 0, "case selects nothing"
    for q in query_vectors():
        vq = VectorStoreQuery(query_embedding=q, similarity_top_k=7, filters=filters)
        got = edge.query(vq).ids
        assert got == reference_ids(nodes, q, 7, pred), name
        if stock_ok:
            assert got == stock.query(vq).ids, name
    # the same filter drives get_nodes, count and delete_nodes
    expected = {n.node_id for n in nodes if pred(n.metadata)}
    assert {n.node_id for n in edge.get_nodes(filters=filters)} == expected
    assert edge.count(filters) == len(expected)
    if stock_ok:
        assert {n.node_id for n in stock.get_nodes(filters=filters)} == expected
    edge.delete_nodes(filters=filters)
    assert edge.count() == N - len(expected)


def test_add_delete_sequence_congruence(edge, stock):
    nodes = make_nodes()
    qs = query_vectors(3)
    live = {n.node_id: n for n in nodes}

    def check():
        for q in qs:
            vq = VectorStoreQuery(query_embedding=q, similarity_top_k=10)
            ids = edge.query(vq).ids
            assert ids == stock.query(vq).ids
            assert ids == reference_ids(list(live.values()), q, 10, lambda m: True)
        assert edge.count() == len(live)
        assert sorted(n.node_id for n in edge.get_nodes()) == sorted(live)

    for batch in (nodes[:25], nodes[25:]):  # two adds
        edge.add(batch)
        stock.add(batch)
    check()
    edge.delete("doc1")
    stock.delete("doc1")
    live = {k: n for k, n in live.items() if n.ref_doc_id != "doc1"}
    check()
    gone = [_uuid(i) for i in (0, 2, 4, 5)]  # 5 is already gone with doc1
    edge.delete_nodes(node_ids=gone)
    stock.delete_nodes(node_ids=gone)
    live = {k: n for k, n in live.items() if k not in gone}
    check()
    # node ids AND filters: only the listed nodes that also match
    sel, flt = [_uuid(i) for i in (6, 7, 8)], Fs(F("year", 2006, FilterOperator.GTE))
    edge.delete_nodes(node_ids=sel, filters=flt)
    stock.delete_nodes(node_ids=sel, filters=flt)
    live = {k: n for k, n in live.items() if not (k in sel and n.metadata["year"] >= 2006)}
    check()
    re_add = [n for n in nodes if n.node_id in gone]  # upsert brings them back
    edge.add(re_add)
    stock.add(re_add)
    live.update({n.node_id: n for n in re_add})
    check()
    # doc_ids and node_ids on the query itself
    for q in qs:
        vq = VectorStoreQuery(query_embedding=q, similarity_top_k=5, doc_ids=["doc2"])
        assert edge.query(vq).ids == stock.query(vq).ids
        ids = [_uuid(i) for i in range(10, 30)]
        vq = VectorStoreQuery(query_embedding=q, similarity_top_k=5, node_ids=ids)
        assert edge.query(vq).ids == stock.query(vq).ids
        assert set(edge.query(vq).ids) <= set(ids)
    sims_e = edge.query(VectorStoreQuery(query_embedding=qs[0], similarity_top_k=5)).similarities
    sims_s = stock.query(VectorStoreQuery(query_embedding=qs[0], similarity_top_k=5)).similarities
    assert np.allclose(sims_e, sims_s, atol=1e-5)


def test_payload_matches_stock_format(edge, stock):
    nodes = make_nodes(3)
    edge.add(nodes)
    stock.add(nodes)
    pid = point_id_for(nodes[0].node_id)
    ours = edge.client.retrieve([pid], with_payload=True, with_vector=False)[0].payload
    theirs = stock.client.retrieve("c", [pid], with_payload=True)[0].payload
    assert list(ours) == list(theirs)
    # the node document is the same JSON, written without the spaces json.dumps adds
    assert json.loads(ours.pop("_node_content")) == json.loads(theirs.pop("_node_content"))
    assert ours == theirs


def test_text_and_image_nodes_round_trip(edge):
    rng = np.random.default_rng(3)
    text = TextNode(
        id_="chunk-0001",  # not a UUID: mapped with uuid5, original kept
        text="Grace Hopper at the Harvard Mark I.",
        metadata={"title": "Grace Hopper", "section": 2, "tags": ["computing"]},
        start_char_idx=10,
        end_char_idx=45,
        relationships={
            NodeRelationship.SOURCE: RelatedNodeInfo(node_id="article-7"),
            NodeRelationship.NEXT: RelatedNodeInfo(node_id="chunk-0002"),
        },
        embedding=rng.standard_normal(DIM).tolist(),
    )
    image = ImageNode(
        id_=_uuid(77),
        image_path="/data/wiki/images/hopper.jpg",
        text="caption: Hopper in 1960",
        metadata={"title": "Grace Hopper", "modality": "image"},
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="article-7")},
        embedding=rng.standard_normal(DIM).tolist(),
    )
    assert edge.add([text, image]) == ["chunk-0001", _uuid(77)]
    got = {n.node_id: n for n in edge.get_nodes(node_ids=["chunk-0001", _uuid(77)])}
    t, i = got["chunk-0001"], got[_uuid(77)]
    assert isinstance(t, TextNode) and not isinstance(t, ImageNode)
    assert (t.text, t.metadata, t.ref_doc_id) == (text.text, text.metadata, "article-7")
    assert (t.start_char_idx, t.end_char_idx) == (10, 45)
    assert t.relationships[NodeRelationship.NEXT].node_id == "chunk-0002"
    assert isinstance(i, ImageNode)
    assert (i.image_path, i.text, i.metadata, i.ref_doc_id) == (
        image.image_path, image.text, image.metadata, "article-7")
    # embeddings come back (cosine stores them normalised)
    e = np.array(text.embedding) / np.linalg.norm(text.embedding)
    assert np.allclose(t.embedding, e, atol=1e-6)
    payload = edge.client.retrieve([point_id_for("chunk-0001")], with_payload=True, with_vector=False)[0].payload
    assert payload["_node_id"] == "chunk-0001"
    res = edge.query(VectorStoreQuery(query_embedding=image.embedding, similarity_top_k=1))
    assert res.ids == [_uuid(77)] and isinstance(res.nodes[0], ImageNode)
    assert res.nodes[0].image_path == image.image_path
    # by original id, through the uuid5 mapping
    edge.delete_nodes(node_ids=["chunk-0001"])
    assert [n.node_id for n in edge.get_nodes()] == [_uuid(77)]


def test_reopen_after_close_keeps_points(tmp_path):
    path = tmp_path / "store"
    nodes = make_nodes()
    with QdrantEdgeVectorStore(path, exact=True) as store:
        assert store.count() == 0 and store.dim is None
        store.add(nodes)
        store.delete("doc3")
        before = store.query(VectorStoreQuery(query_embedding=query_vectors(1)[0], similarity_top_k=5))
    assert store.client is None
    with pytest.raises(StorageError, match="closed"):
        store.count()
    with QdrantEdgeVectorStore(path, exact=True) as store:
        assert store.dim == DIM
        assert store.count() == N - N // 4
        after = store.query(VectorStoreQuery(query_embedding=query_vectors(1)[0], similarity_top_k=5))
        assert after.ids == before.ids
        assert set(store.client.info().payload_schema) >= {"doc_id", "ref_doc_id", "title"}
        with pytest.raises(ValueError, match="dimension 4.*8-d"):
            store.add(make_nodes(2, dim=4))
    meta = json.loads((path / "rag_store.json").read_text())
    assert meta["dim"] == DIM


def test_delete_by_ref_doc_and_clear(edge):
    edge.add(make_nodes())
    edge.delete("doc0")
    left = edge.get_nodes()
    assert len(left) == N - N // 4 and all(n.ref_doc_id != "doc0" for n in left)
    edge.delete("no-such-doc")
    assert edge.count() == N - N // 4
    edge.clear()
    assert edge.count() == 0 and edge.dim is None and edge.get_nodes() == []
    assert edge.query(VectorStoreQuery(query_embedding=[1.0] * 4, similarity_top_k=3)).ids == []
    edge.add(make_nodes(5, dim=4))  # a cleared store takes a new dimension
    assert edge.count() == 5 and edge.dim == 4


def test_empty_store_and_noops(edge):
    assert edge.get_nodes() == [] and edge.count() == 0
    edge.delete("x")
    edge.delete_nodes(node_ids=["a"])
    assert edge.add([]) == []
    edge.add(make_nodes(10))
    edge.delete_nodes()  # nothing selected: nothing deleted
    edge.delete_nodes(filters=Fs())
    assert edge.count() == 10
    assert edge.get_nodes(node_ids=[]) == []
    assert len(edge.get_nodes(limit=3)) == 3
    with pytest.raises(ValueError, match="no embedding"):
        edge.add([TextNode(text="x")])


def test_async_methods(edge):
    nodes = make_nodes(20)

    async def run():
        await edge.async_add(nodes)
        q = VectorStoreQuery(query_embedding=query_vectors(1)[0], similarity_top_k=3)
        res = await edge.aquery(q)
        assert res.ids == reference_ids(nodes, q.query_embedding, 3, lambda m: True)
        assert len(await edge.aget_nodes(node_ids=res.ids)) == 3
        await edge.adelete("doc0")
        await edge.adelete_nodes(node_ids=[_uuid(1)])
        assert edge.count() == 20 - 5 - 1
        await edge.aclear()
        assert edge.count() == 0

    asyncio.run(run())


@pytest.mark.parametrize("quantization", ["int8", None])
def test_hnsw_index_build_and_search(tmp_path, quantization):
    nodes = make_nodes(300, dim=16)
    q = query_vectors(1, dim=16)[0]
    with QdrantEdgeVectorStore(
        tmp_path / "s", index_threshold=100, hnsw_ef=64, quantization=quantization
    ) as store:
        store.add(nodes[:150])  # crosses index_threshold: this add builds the graph
        assert store.stats()["indexed_vectors"] == 150
        store.add(nodes[150:])
        store.optimize()
        st = store.stats()
        assert st["points"] == 300 and st["indexed_vectors"] == 300
        exact = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=5), exact=True)
        assert exact.ids == reference_ids(nodes, q, 5, lambda m: True)
        approx = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=5))
        assert len(set(approx.ids) & set(exact.ids)) >= 4
    with QdrantEdgeVectorStore(tmp_path / "s", quantization=quantization) as store:
        assert store.stats()["indexed_vectors"] == 300  # the graph is persisted
        again = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=5), exact=True)
        assert again.ids == exact.ids


def test_add_leaves_graph_building_to_optimize(tmp_path, monkeypatch, caplog):
    import rag.stores.edge as edge_module

    monkeypatch.setattr(edge_module, "UNINDEXED_WARNING", 200)
    nodes = make_nodes(300, dim=16)
    q = query_vectors(1, dim=16)[0]
    with QdrantEdgeVectorStore(tmp_path / "s") as store:
        store.add(nodes[:150])
        assert store.unindexed() == 150 and store.stats()["indexed_vectors"] == 0
        with caplog.at_level("WARNING", logger="rag.stores.edge"):
            store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=5))  # 150: quiet
            store.add(nodes[150:])
            for _ in range(2):
                got = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=5))
        assert got.ids == reference_ids(nodes, q, 5, lambda m: True)  # exact over the tail
        hints = [r.getMessage() for r in caplog.records]
        assert len(hints) == 1 and hints[0].startswith("300 points of the vector store at ")
        assert "call optimize() once after bulk loads" in hints[0]
        assert store.optimize() is True
        assert store.unindexed() == 0 and store.stats()["indexed_vectors"] == 300
    with QdrantEdgeVectorStore(tmp_path / "s") as store:  # reopened: the count is read back
        assert store.unindexed() == 0
        store.add(make_nodes(310, dim=16)[300:])  # new ids
        assert store.unindexed() == 10


@pytest.mark.parametrize(
    "flt, words",
    [
        (F("title", "fox", FilterOperator.GT), ["GT", "numbers or ISO-8601"]),
        (F("score", [0.5, 1.0], FilterOperator.NIN), ["NIN", "floats"]),
        (F("color", ["red", "blue"]), ["EQ", "use in/any for lists"]),
        (F("tags", ["a"], FilterOperator.CONTAINS), ["CONTAINS", "one value"]),
        (F("title", 3, FilterOperator.TEXT_MATCH), ["TEXT_MATCH", "string"]),
        (MetadataFilter.model_construct(key="title", value="x", operator="regex"), ["regex"]),
    ],
)
def test_unsupported_operator_errors(flt, words, edge):
    edge.add(make_nodes(5))
    with pytest.raises(ValueError) as err:
        edge.query(VectorStoreQuery(query_embedding=[1.0] * DIM, filters=Fs(flt)))
    for w in words:
        assert w in str(err.value)
    assert "not supported by QdrantEdgeVectorStore" in str(err.value)


def test_build_filter_shapes():
    assert build_filter(None) is None and build_filter(Fs()) is None
    f = build_filter(Fs(F("a", 1), F("b", 2), condition=FilterCondition.NOT))
    assert f.must_not is not None and len(f.must_not) == 2


def _run_py(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO),
    )


def test_second_process_gets_clear_lock_error(tmp_path):
    path = tmp_path / "locked"
    with QdrantEdgeVectorStore(path) as store:
        store.add(make_nodes(5))
        proc = _run_py(f"""
            from rag.errors import StorageError
            from rag.stores import QdrantEdgeVectorStore
            try:
                QdrantEdgeVectorStore({str(path)!r})
            except StorageError as e:
                print(e)
            else:
                print("OPENED")
        """)
        assert proc.returncode == 0, proc.stderr
        msg = proc.stdout.strip()
        assert str(path) in msg and "in use by another process" in msg
        assert f"pid {os.getpid()}" in msg
        with pytest.raises(StorageError, match="already open in this process"):
            QdrantEdgeVectorStore(path)
    # released on close: another process can open it now
    proc = _run_py(f"""
        from rag.stores import QdrantEdgeVectorStore
        with QdrantEdgeVectorStore({str(path)!r}) as s:
            print(s.count())
    """)
    assert proc.stdout.strip() == "5", proc.stderr


def test_data_survives_sigkill_after_add(tmp_path):
    path = tmp_path / "killed"
    proc = _run_py(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_edge_store import make_nodes
        from rag.stores import QdrantEdgeVectorStore
        store = QdrantEdgeVectorStore({str(path)!r})
        store.add(make_nodes())
        store.delete("doc2")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with QdrantEdgeVectorStore(path, exact=True) as store:  # lock was released by the kernel
        assert store.count() == N - N // 4
        nodes = [n for n in make_nodes() if n.ref_doc_id != "doc2"]
        q = query_vectors(1)[0]
        res = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=5))
        assert res.ids == reference_ids(nodes, q, 5, lambda m: True)
        assert res.nodes[0].text.startswith("chunk ")
