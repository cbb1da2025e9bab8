"""Every backend implements the Collection protocol, so the index and the retriever never probe."""

from __future__ import annotations

import inspect
import re
import uuid
import warnings

import pytest
from llama_index.core.schema import TextNode

from rag.stores.base import Collection

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

DIM = 16


def _id(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def _nodes(n: int) -> list:
    return [TextNode(id_=_id(i), text=f"node {i}", embedding=[float((i * 7 + j) % 11) + 1.0 for j in range(DIM)])
            for i in range(n)]


def _edge(tmp_path):
    from rag.stores.edge import QdrantEdgeVectorStore

    return QdrantEdgeVectorStore(tmp_path / "edge"), True


def _local(tmp_path):
    from qdrant_client import QdrantClient

    from rag.stores.local import LocalQdrantVectorStore

    return LocalQdrantVectorStore(collection_name="c", client=QdrantClient(path=str(tmp_path / "local"))), False


def _server(tmp_path):
    """The server store's class over qdrant-client's in-memory mode (the same client API)."""
    from qdrant_client import QdrantClient

    from rag.stores.local import ServerQdrantVectorStore

    return ServerQdrantVectorStore(collection_name="c", client=QdrantClient(":memory:")), False


@pytest.mark.parametrize("make", [_edge, _local, _server], ids=["edge", "local", "server"])
def test_every_backend_is_a_collection(tmp_path, make):
    store, has_graph = make(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert isinstance(store, Collection)
        assert (store.count(), store.has_points(), store.unindexed()) == (0, False, 0)
        assert list(store.iter_nodes()) == []
        assert store.build_search_graph() is False  # nothing to build in an empty collection
        store.add(_nodes(150))
        assert (store.count(), store.has_points()) == (150, True)
        assert store.unindexed() == (150 if has_graph else 0)
        assert store.build_search_graph() is has_graph
        assert store.unindexed() == 0
        pages = list(store.iter_nodes(64))  # the whole collection, a bounded page at a time
        assert [len(p) for p in pages] == [64, 64, 22]
        assert sorted(n.node_id for p in pages for n in p) == sorted(_id(i) for i in range(150))
        assert all(n.embedding is None and n.get_content() for p in pages for n in p)
        store.delete_nodes(node_ids=[_id(i) for i in range(150)])
        assert (store.count(), store.has_points()) == (0, False)
    (store.close if has_graph else store.client.close)()


def test_search_asks_the_index_whether_collections_are_empty_without_counting(open_test_index, corpus):
    """An exact count visits every point (milliseconds per 100k); search only needs 'any points?'."""
    from rag.index.ingest import ingest
    from rag.search.retriever import Retriever

    index = open_test_index()
    assert not index.has_points("text") and not index.has_points("image")
    assert not index.stores.text.has_points() and not index.stores.image.has_points()
    ingest(index, [corpus], progress=False)
    assert index.has_points("text") and index.has_points("image")

    def no_counting(*args, **kwargs):
        raise AssertionError("search must not count every point")

    index.counts = no_counting
    for store in (index.stores.text, index.stores.image):
        object.__setattr__(store, "count", no_counting)
    hits = Retriever(index).search("the cat", top_k=2, image_top_k=1)
    assert sorted(h.modality for h in hits) == ["image", "text", "text"]  # one list, ranked across both


def test_info_reports_unindexed_points_for_every_store(open_test_index, corpus):
    from rag.index.ingest import ingest

    index = open_test_index()
    ingest(index, [corpus], progress=False)
    info = index.info()
    assert {k: (c["points"], isinstance(c["unindexed"], int)) for k, c in info["collections"].items()} == {
        "text": (3, True), "image": (3, True)}


def test_callers_do_not_probe_the_stores():
    import rag.index.core
    import rag.search.retriever
    import rag.stores.factory

    for module in (rag.index.core, rag.stores.factory, rag.search.retriever):
        source = inspect.getsource(module)
        assert "hasattr(" not in source and not re.search(r"except Exception:[^\n]*\n\s*(pass|continue)", source)
        assert "count_points" not in source


@pytest.mark.parametrize("make", [_edge, _local, _server], ids=["edge", "local", "server"])
def test_query_ids_rank_as_query_does_without_reading_payloads(tmp_path, make):
    """`query_ids` (the fused search's dense legs) gives the point ids and scores of `query`'s nodes,
    in the same order, with filters, for UUID node ids and (in our edge store; the stock store
    takes UUIDs only) others."""
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters, VectorStoreQuery

    from rag.stores.payload import point_id_for

    store, _ = make(tmp_path)
    nodes = _nodes(12)
    for i, node in enumerate(nodes):
        node.metadata = {"half": "a" if i < 6 else "b"}
        if i % 3 == 0 and make is _edge:
            node.id_ = f"passage-{i}"  # not a UUID: its point id is a uuid5 of it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert store.query_ids(nodes[0].embedding, 5) == []  # nothing stored yet
        store.add(nodes)
        for filters in (None, MetadataFilters(filters=[MetadataFilter(key="half", value="b")])):
            vector = [1.0 + (j % 5) for j in range(DIM)]
            result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=5, filters=filters))
            expected = [(point_id_for(n.node_id), pytest.approx(s, abs=1e-6))
                        for n, s in zip(result.nodes, result.similarities)]
            assert store.query_ids(vector, 5, filters) == expected
            assert len(expected) == 5
        assert store.query_ids(vector, 0) == []
