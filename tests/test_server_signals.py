"""Signals on a Qdrant server: the same vectors, rankings and fused search as the embedded store.

`QdrantClient(":memory:")` stands in for the server: qdrant-client's local mode takes the same
calls (collections with `Modifier.IDF` sparse vectors, `query_batch_points`, filters) and, as
the first test shows, scores BM25 exactly as the engine does. Congruence tests index the same
nodes in the embedded signal store (qdrant-edge) and the server one and compare rankings.
"""

from __future__ import annotations

import socket
import warnings

import numpy as np
import pytest
from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from qdrant_client import QdrantClient, models

from rag.errors import StorageError
from rag.stores.base import SignalIndex
from rag.stores.server_filters import server_filter
from rag.stores.server_signals import ServerSignalStore, signal_collection
from rag.stores.signal_points import SignalPoint, bm25_document
from rag.stores.signals import SignalStore

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

DIM = 8
ARTICLES = {  # title -> passages (distinct lengths and words, so that no two scores tie)
    "Moon": ["The Moon raises the tides of the oceans twice a day as the Earth turns beneath it",
             "Craters left by asteroid impacts cover the grey surface of the Moon",
             "Twelve astronauts walked on the Moon between 1969 and 1972"],
    "Coffee": ["Espresso is brewed by forcing hot water through finely ground coffee beans",
               "Roasting turns green coffee beans brown and releases their aroma",
               "A cup of coffee with milk foam is called a cappuccino in Italy"],
    "Summer Palace": ["The Summer Palace in Beijing is a vast ensemble of lakes, gardens and palaces",
                      "Kunming Lake covers three quarters of the Summer Palace grounds"],
    "Rocket": ["The Falcon 9 rocket lands its first stage back on a drone ship after launch",
               "A reusable rocket booster lowers the cost of reaching orbit",
               "Liquid oxygen and kerosene feed the nine engines of the first stage"],
    "Cat": ["The domestic cat is a small carnivore that purrs when content",
            "Cats sleep for twelve to sixteen hours a day and hunt at dawn and dusk"],
}
CAPTIONS = {
    "Moon": ["Full moon over the sea, craters visible", "Apollo astronaut on the lunar surface"],
    "Coffee": ["A cup of espresso with golden crema on a saucer"],
    "Summer Palace": ["The Seventeen-Arch Bridge over Kunming Lake"],
    "Rocket": ["Falcon 9 lifting off at night", "A rocket booster landing on a drone ship at sea"],
    "Cat": ["Close-up of a tabby cat with long white whiskers"],
}


def _meta(title: str, i: int, modality: str) -> dict:
    return {"title": title, "url": f"https://example.org/{title.replace(' ', '_')}", "modality": modality,
            "year": 2000 + i % 5, "score": (i % 4) * 0.5, "flag": i % 2 == 0, "tags": ["dropped", "list"]}


def text_points() -> list:
    points, i = [], 0
    for doc, (title, passages) in enumerate(ARTICLES.items()):
        for passage in passages:
            points.append(SignalPoint(f"t{i}", f"d{doc}", _meta(title, i, "text"), f"{title}\n\n{passage}"))
            i += 1
    return points


def image_points() -> list:
    rng = np.random.default_rng(7)
    points, i = [], 0
    for doc, (title, captions) in enumerate(CAPTIONS.items()):
        for caption in captions:
            vector = rng.standard_normal(DIM).tolist()
            points.append(SignalPoint(f"i{i}", f"d{doc}", _meta(title, i, "image"), f"{title}. {caption}", vector))
            i += 1
    return points


@pytest.fixture
def backends(tmp_path):
    """(edge, server) signal stores of both kinds, filled with the same points."""
    client = QdrantClient(":memory:")
    stores = {}
    for kind, points in (("text", text_points()), ("image", image_points())):
        edge, server = SignalStore(tmp_path / kind, kind), ServerSignalStore(client, f"c_{kind}_signals", kind)
        for store in (edge, server):
            store.add(points)
            store.optimize()
        stores[kind] = (edge, server)
    yield stores
    for edge, _ in stores.values():
        edge.close()
    client.close()


def F(key, value, op=FilterOperator.EQ):
    return MetadataFilter(key=key, value=value, operator=op)


def Fs(*filters, condition=FilterCondition.AND):
    return MetadataFilters(filters=list(filters), condition=condition)


FILTERS = {
    "none": None,
    "title": Fs(F("title", "Moon")),
    "url_in": Fs(F("url", ["https://example.org/Moon", "https://example.org/Rocket"], FilterOperator.IN)),
    "not_title": Fs(F("title", "Moon"), condition=FilterCondition.NOT),
    "year_gte": Fs(F("year", 2002, FilterOperator.GTE)),
    "float_ne": Fs(F("score", 0.5, FilterOperator.NE)),
    "or": Fs(F("title", "Coffee"), F("year", 2001), condition=FilterCondition.OR),
}
QUERIES = ["moon tides", "coffee beans espresso", "rocket booster landing at sea", "lake palace bridge",
           "cat whiskers", "the astronauts of Apollo"]


def _same_leg(edge_leg, server_leg, scores=True):
    """Same nodes in the same order (and the same scores, unless `scores` is False)."""
    assert [n for n, _ in server_leg] == [n for n, _ in edge_leg]
    if scores:
        assert [s for _, s in server_leg] == pytest.approx([s for _, s in edge_leg], rel=1e-5, abs=1e-6)


def _terms(text: str) -> dict:
    from rag.stores.signal_points import bm25_query, sparse_terms

    indices, values = sparse_terms(bm25_query(text, 256.0))
    return {"indices": indices, "values": values}


def test_local_mode_applies_idf_like_the_engine(backends):
    """The stand-in is fit for the job: the server applies IDF as qdrant-edge does, to the same scores."""
    edge, server = backends["text"]
    edge_leg, server_leg = edge.query("moon tides", limit=5)["bm25"], server.query("moon tides", limit=5)["bm25"]
    _same_leg(edge_leg, server_leg)
    assert edge_leg[0][0] == "t0"  # the only passage with the rare word "tides"
    # by hand: sum over the query's terms of idf(term) * the passage's BM25 weight of the term
    points = text_points()
    documents = [dict(zip(*_sparse(bm25_document(p.text, 256.0)))) for p in points]
    query = _terms("moon tides")["indices"]

    def idf(term):
        n = sum(term in d for d in documents)
        return np.log(1 + (len(documents) - n + 0.5) / (n + 0.5))

    expected = sum(idf(t) * documents[0].get(t, 0.0) for t in query)
    assert server_leg[0][1] == pytest.approx(expected, rel=1e-5) and edge_leg[0][1] == pytest.approx(expected, rel=1e-5)
    # without the IDF modifier the same vectors score the raw weights: the modifier is what acts
    client = server.client
    client.create_collection("plain", vectors_config={}, sparse_vectors_config={"bm25": models.SparseVectorParams()})
    client.upsert("plain", [models.PointStruct(id=p.id, vector={"bm25": p.vector["bm25"]}, payload=p.payload)
                            for p in server.build_points(points)])
    raw = client.query_points("plain", query=models.SparseVector(**_terms("moon tides")), using="bm25", limit=1).points
    assert raw[0].score == pytest.approx(sum(documents[0].get(t, 0.0) for t in query), rel=1e-5)


def _sparse(vector):
    from rag.stores.signal_points import sparse_terms

    return sparse_terms(vector)


def test_both_backends_hold_identical_vectors(backends):
    """One function computes the BM25 vectors for both: what each backend stores is the same, bit for bit."""
    from rag.stores.payload import point_id_for

    for kind, points in (("text", text_points()), ("image", image_points())):
        edge, server = backends[kind]
        ids = [point_id_for(p.node_id) for p in points]
        stored_edge = {r.payload["node_id"]: r for r in edge._shard.retrieve(ids, with_payload=True, with_vector=True)}
        stored_server = {r.payload["node_id"]: r for r in server.client.retrieve(
            server.collection_name, ids=ids, with_payload=True, with_vectors=True)}
        assert sorted(stored_edge) == sorted(stored_server) == sorted(p.node_id for p in points)
        for node_id, record in stored_server.items():
            mine = record.vector["bm25"]
            theirs = stored_edge[node_id].vector["bm25"]
            assert sorted(zip(mine.indices, mine.values)) == sorted(zip(theirs.indices, theirs.values))
            assert record.payload == stored_edge[node_id].payload
            assert "tags" not in record.payload  # flat metadata only, on both
            if kind == "image":
                assert record.vector["words"] == pytest.approx(stored_edge[node_id].vector["words"], abs=1e-6)


@pytest.mark.parametrize("name", FILTERS)
def test_bm25_and_words_rankings_agree(backends, name):
    filters = FILTERS[name]
    rng = np.random.default_rng(3)
    for query in QUERIES:
        for kind in ("text", "image"):
            edge, server = backends[kind]
            words = rng.standard_normal(DIM).tolist() if kind == "image" else None
            got_edge = edge.query(query, words, limit=6, filters=filters)
            got_server = server.query(query, words, limit=6, filters=filters)
            assert sorted(got_server) == sorted(got_edge) == (["bm25", "words"] if kind == "image" else ["bm25"])
            for leg in got_edge:
                _same_leg(got_edge[leg], got_server[leg])
    if name != "none":  # the filter acts
        wide = "the moon, coffee, a rocket, a palace and a cat"
        server = backends["text"][1]
        assert server.query(wide, limit=20, filters=filters) != server.query(wide, limit=20)


def test_article_lookups_and_deletes_agree(backends):
    moon, rocket = "https://example.org/Moon", "https://example.org/Rocket"
    for kind, (edge, server) in backends.items():
        for filters in (None, FILTERS["year_gte"]):
            assert server.ids_of_articles([moon, rocket], filters=filters) == edge.ids_of_articles([moon, rocket], filters=filters)
        ids = [p.node_id for p in (text_points() if kind == "text" else image_points())][:4] + ["unknown"]
        assert server.article_keys(ids) == edge.article_keys(ids)
        assert len(server.article_keys(ids)) == 4
        for store in (edge, server):
            store.delete_documents(["d0", "d3"])  # the Moon and the Rocket
        assert server.count() == edge.count() == {"text": 7, "image": 3}[kind]
        assert server.ids_of_articles([moon, rocket]) == edge.ids_of_articles([moon, rocket]) == {}
        # the same ranking; not the same scores: qdrant-edge (like a server's segments until they
        # are vacuumed) still counts deleted points in its IDF statistics, the local mode does not
        _same_leg(edge.query("rocket coffee", limit=10)["bm25"], server.query("rocket coffee", limit=10)["bm25"],
                  scores=False)


def test_the_server_store_keeps_the_signal_store_contract(tmp_path):
    client = QdrantClient(":memory:")
    text, image = ServerSignalStore(client, "t_signals", "text"), ServerSignalStore(client, "i_signals", "image")
    assert isinstance(text, SignalIndex) and isinstance(SignalStore(tmp_path / "e", "text"), SignalIndex)
    assert not text.exists() and text.count() == 0 and text.query("anything") == {}
    assert text.ids_of_articles(["x"]) == {} and text.article_keys(["n"]) == {} and text.optimize() is False
    text.delete_documents(["d"])  # nothing to delete yet: no error
    text.ensure()
    assert text.exists() and client.collection_exists("t_signals") and text.count() == 0
    assert text.query("the of and") == {}  # only stop words: no lexical leg
    with pytest.raises(ValueError, match="an image signal store needs the text model's dimension"):
        image.ensure()
    with pytest.raises(ValueError, match="image node i9 has no words vector"):
        image.add([SignalPoint("i9", "d", {}, "x")])
    image.add(image_points())
    with pytest.raises(ValueError, match=r"words vectors of size \[3\], but 'i_signals' holds 8"):
        image.add([SignalPoint("i9", "d", {}, "x", [1.0, 0.0, 0.0])])
    reopened = ServerSignalStore(client, "i_signals", "image")  # reads what the collection is
    assert reopened.exists() and reopened.count() == len(image_points())
    wrong = ServerSignalStore(client, "i_signals", "text")  # opens, so that a rebuild can drop it
    assert wrong.exists()
    for use in (lambda: wrong.query("moon"), wrong.count, lambda: wrong.add(text_points()), wrong.ensure,
                lambda: wrong.ids_of_articles(["x"]), lambda: wrong.article_keys(["i1"])):
        with pytest.raises(StorageError) as err:
            use()
        assert str(err.value) == ("the collection 'i_signals' on the Qdrant server is not a text signal store of "
                                  "format 1; rebuild it with: rag migrate --signals")
    # a server that keeps no collection metadata (before Qdrant 1.16): the vectors tell the kind
    client.create_collection("old_signals", vectors_config={"words": models.VectorParams(
        size=DIM, distance=models.Distance.COSINE)}, sparse_vectors_config={"bm25": models.SparseVectorParams(
            modifier=models.Modifier.IDF)})
    assert ServerSignalStore(client, "old_signals", "image").count() == 0
    with pytest.raises(StorageError, match="'old_signals' on the Qdrant server is not a text signal store"):
        ServerSignalStore(client, "old_signals", "text").count()
    client.create_collection("dense_only", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    with pytest.raises(StorageError, match="'dense_only' on the Qdrant server is not an image signal store"):
        ServerSignalStore(client, "dense_only", "image").query("x", [0.0] * DIM)
    reopened.drop()
    assert not reopened.exists() and not client.collection_exists("i_signals") and reopened.count() == 0
    text.close()
    with pytest.raises(StorageError, match="the signal store 't_signals' is closed"):
        text.add(text_points())
    assert signal_collection("rag_text") == "rag_text_signals"
    with pytest.raises(ValueError, match="kind must be 'text' or 'image', got 'audio'"):
        ServerSignalStore(client, "a", "audio")
    client.close()


def test_an_unreachable_server_is_a_storage_error_not_a_traceback():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    client = QdrantClient(url=f"http://127.0.0.1:{port}", timeout=1, check_compatibility=False)
    with pytest.raises(StorageError) as err:
        ServerSignalStore(client, "rag_text_signals", "text")
    assert str(err.value).startswith("the Qdrant server could not find the signal collection 'rag_text_signals' "
                                     "(ResponseHandlingException: ")
    client.close()


# -- the filters -------------------------------------------------------------------------------

def _edge_cases():
    import test_edge_store

    return test_edge_store


@pytest.mark.parametrize("case", _edge_cases().CASES, ids=[c[0] for c in _edge_cases().CASES])
def test_server_filters_select_what_the_edge_filters_select(case, tmp_path):
    """Every filter case of the embedded store's tests, on qdrant-client: the same points as the predicate."""
    from rag.stores.edge import QdrantEdgeVectorStore

    name, filters, predicate, _ = case
    cases = _edge_cases()
    nodes = cases.make_nodes()
    client = QdrantClient(":memory:")
    client.create_collection("c", vectors_config=models.VectorParams(size=cases.DIM, distance=models.Distance.COSINE))
    client.upsert("c", [models.PointStruct(id=n.node_id, vector=n.embedding, payload={**n.metadata, "node_id": n.node_id})
                        for n in nodes])
    expected = {n.node_id for n in nodes if predicate(n.metadata)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records, _ = client.scroll("c", scroll_filter=server_filter(filters), limit=1000, with_payload=["node_id"])
    assert {r.payload["node_id"] for r in records} == expected, name
    with QdrantEdgeVectorStore(tmp_path / "edge") as edge:
        edge.add(cases.make_nodes())
        assert {n.node_id for n in edge.get_nodes(filters=filters)} == expected
    client.close()


@pytest.mark.parametrize("flt, words", [
    (F("title", "fox", FilterOperator.GT), ["GT", "numbers or ISO-8601"]),
    (F("score", [0.5, 1.0], FilterOperator.NIN), ["NIN", "floats"]),
    (F("color", ["red", "blue"]), ["EQ", "use in/any for lists"]),
    (F("tags", ["a"], FilterOperator.CONTAINS), ["CONTAINS", "one value"]),
    (F("title", 3, FilterOperator.TEXT_MATCH), ["TEXT_MATCH", "string"]),
    (MetadataFilter.model_construct(key="year", value=[1, "a"], operator=FilterOperator.IN),
     ["IN", "all are strings or all are integers"]),
    (MetadataFilter.model_construct(key="title", value="x", operator="regex"), ["regex", "supported operators are"]),
])
def test_unsupported_filters_say_why(flt, words):
    with pytest.raises(ValueError) as err:
        server_filter(Fs(flt))
    for word in words:
        assert word in str(err.value)
    assert "is not supported by the Qdrant server's signal store" in str(err.value)


def test_filter_shapes():
    assert server_filter(None) is None and server_filter(Fs()) is None and server_filter(Fs(Fs())) is None
    assert server_filter(Fs(F("a", 1), F("b", 2), condition=FilterCondition.NOT)) == models.Filter(must_not=[
        models.FieldCondition(key="a", match=models.MatchValue(value=1)),
        models.FieldCondition(key="b", match=models.MatchValue(value=2))])
    assert server_filter(Fs(F("a", None))) == models.Filter(must=[
        models.IsNullCondition(is_null=models.PayloadField(key="a"))])
    assert server_filter(Fs(F("a", 1.5))) == models.Filter(must=[
        models.FieldCondition(key="a", range=models.Range(gte=1.5, lte=1.5))])
