"""An index on a Qdrant server has the lexical and caption signals too, and searches as the embedded one.

qdrant-client's local mode stands in for the server (`QdrantClient(":memory:")`, or a folder
where a command line must find it again): the server stores and the server signal stores take
the same client calls. Tiny random models; no network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
from qdrant_client import QdrantClient

from rag.cli import main
from rag.index.core import RagIndex
from rag.index.ingest import ingest
from rag.index.signals import upgrade_signals
from rag.search.retriever import Retriever
from rag.service import RagService
from rag.stores.factory import QDRANT_TIMEOUT, StorePair
from rag.stores.local import ServerQdrantVectorStore
from rag.stores.server_signals import ServerSignalStore
from rag.stores.signals import SignalStore

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

SAMPLE = Path(__file__).resolve().parent.parent / "rag" / "sample"
URL = "http://qdrant.test:6333"  # never contacted: the stand-in answers


def server_stores(settings, client) -> StorePair:
    make = lambda name: ServerQdrantVectorStore(collection_name=name, client=client)  # noqa: E731
    return StorePair(make(settings.text_collection), make(settings.image_collection), "server", "memory",
                     [client.close], client=client)


@pytest.fixture
def open_server_index(settings, shared_embeddings):
    """Open an index whose collections live on the stand-in server (in memory)."""
    opened = []

    def opener(storage=None):
        s = settings.with_overrides(qdrant_url=URL, storage=storage)
        index = RagIndex(s, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"],
                         stores=server_stores(s, QdrantClient(":memory:")))
        opened.append(index)
        return index

    yield opener
    for index in opened:
        index.close()


def test_a_server_index_writes_searches_and_deletes_its_signals(open_server_index, corpus):
    index = open_server_index()
    assert all(isinstance(store, ServerSignalStore) for store in index.signals.values())
    assert not any(store.exists() for store in index.signals.values())
    ingest(index, [corpus], progress=False)
    client = index.stores.client
    assert {c.name for c in client.get_collections().collections} == {
        "text", "image", "text_signals", "image_signals"}
    assert index.info()["signals"] == {"text": 3, "image": 3} and not index.needs_signals()
    assert not (Path(index.settings.storage) / "signals").exists()  # nothing beside the ledger on disk

    retriever = Retriever(index)
    assert retriever.notes() == []
    hits = retriever.search("the cat purrs", top_k=3, image_top_k=3)
    cat = next(h for h in hits if h.modality == "text" and h.title == "Cat")
    assert cat.signals["bm25"]["rank"] == 1
    assert {"words", "words_bm25"} & {name for h in hits if h.modality == "image" for name in h.signals}

    index.delete_documents([index.stores.text.get_nodes(node_ids=[cat.node_id])[0].ref_doc_id])
    assert index.signals["text"].count() == 2
    assert "bm25" not in retriever.search("purrs", top_k=3, image_top_k=0)[0].signals  # the only passage with it is gone


def _keys(hits):
    return [(h.modality, h.node_id) for h in hits]


def test_fused_search_is_the_same_on_both_backends(open_test_index, open_server_index, tmp_path):
    """The sample corpus in the embedded store and on the server: the same fused hits, in the same order."""
    edge = open_test_index()
    server = open_server_index(tmp_path / "server-ledger")
    for index in (edge, server):
        ingest(index, [SAMPLE], progress=False)
    assert edge.counts() == server.counts() == {"text": 43, "image": 16}
    assert isinstance(edge.signals["text"], SignalStore)
    assert {k: s.count() for k, s in edge.signals.items()} == {k: s.count() for k, s in server.signals.items()}

    searches = [
        ("Who was the first woman to command a Space Shuttle mission?", None),
        ("espresso with crema", None),
        ("what raises the tides", None),
        ("craters", {"title": "Moon"}),
        ("a rocket landing on a drone ship", None),
        ("whiskers", None),
    ]
    seen = set()
    for query, filters in searches:
        on_edge = Retriever(edge).search(query, top_k=5, image_top_k=3, filters=filters)
        on_server = Retriever(server).search(query, top_k=5, image_top_k=3, filters=filters)
        assert _keys(on_server) == _keys(on_edge), query
        assert [h.score for h in on_server] == pytest.approx([h.score for h in on_edge], abs=1e-4)
        assert [sorted(h.signals) for h in on_server] == [sorted(h.signals) for h in on_edge]
        if filters:
            assert {h.title for h in on_server} == {"Moon"}
        seen.update(name for h in on_server for name in h.signals)
    assert seen == {"dense", "bm25", "clip", "words", "words_bm25", "article"}  # every signal took part

    # the service's search over a server-backed index: the same list
    query = "the first woman to command a Space Shuttle"
    found = RagService(index=server).search(query, top_k=4, image_top_k=2)
    assert _keys(found.hits) == _keys(RagService(index=edge).search(query, top_k=4, image_top_k=2).hits)
    assert found.notes == [] and found.hits[0].title == "Eileen Collins"


def test_an_older_server_index_gains_the_signals(open_server_index, corpus):
    index = open_server_index()
    ingest(index, [corpus], progress=False)
    for store in index.signals.values():  # as an index built on the server before the signals existed
        store.drop()
    retriever = Retriever(index)
    assert index.needs_signals() and retriever.notes() == [
        "the index on the Qdrant server at memory was built before lexical and caption signals: searching with "
        "dense vectors only. Add them (no image is embedded again) with: "
        f"rag migrate --signals --storage {index.settings.storage}"]
    assert {n for h in retriever.search("moon", top_k=3, image_top_k=3) for n in h.signals} <= {"dense", "clip"}
    assert upgrade_signals(index) == {"text": 3, "image": 3}
    assert not index.needs_signals() and retriever.notes() == []
    moon = next(h for h in Retriever(index).search("moon", top_k=3, image_top_k=3) if h.title == "Moon")
    assert moon.signals["bm25"]["rank"] == 1
    assert upgrade_signals(index) == {"text": 3, "image": 3}  # twice is harmless
    assert index.info()["signals"] == {"text": 3, "image": 3}


@pytest.fixture
def stand_in_server(tmp_path, monkeypatch):
    """RAG_QDRANT_URL answered by qdrant-client's local folder mode; records how each client was made."""
    import qdrant_client

    folder, made = tmp_path / "server", []

    class StandIn(QdrantClient):
        def __init__(self, **kwargs):
            made.append(kwargs)
            super().__init__(path=str(folder))

    monkeypatch.setattr(qdrant_client, "QdrantClient", StandIn)
    return made


def test_the_command_line_builds_and_upgrades_server_signals(settings, corpus, stand_in_server):
    env = {"RAG_STORAGE": str(settings.storage), "RAG_TEXT_MODEL": settings.text_model,
           "RAG_IMAGE_MODEL": settings.image_model, "RAG_QDRANT_URL": URL}
    run = lambda *args: CliRunner().invoke(main, list(args), env=env)  # noqa: E731
    assert run("ingest", str(corpus)).exit_code == 0
    # the signal collections use the factory's client: its address and its timeout
    assert stand_in_server[0]["url"] == URL and stand_in_server[0]["timeout"] == QDRANT_TIMEOUT
    info = json.loads(run("info", "--json").stdout)
    assert info["store"] == "server" and info["signals"] == {"text": 3, "image": 3}
    search = run("search", "moon")
    assert search.exit_code == 0 and "Note:" not in search.stderr and "found by: " in search.stdout

    with RagIndex(settings.with_overrides(qdrant_url=URL), check_models=False) as index:
        assert index.signals["text"].client is index.stores.client
        for store in index.signals.values():
            store.drop()  # an index built before the signals
    search = run("search", "moon")
    assert f"Note: the index on the Qdrant server at {URL} was built before lexical and caption signals" in search.stderr
    result = run("migrate", "--signals")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"Built the signals of the index on the Qdrant server at {URL}: 3 passages, "
                                     "3 images (no image embedded again).")
    search = run("search", "moon")
    assert "Note:" not in search.stderr and "found by: " in search.stdout
    assert not (settings.storage / "signals").exists()


def test_a_server_store_pair_without_its_client_is_refused(settings, shared_embeddings):
    s = settings.with_overrides(qdrant_url=URL)
    client = QdrantClient(":memory:")
    pair = server_stores(s, client)
    pair.client = None
    with pytest.raises(ValueError, match=r"a server StorePair needs its qdrant-client \(StorePair.client\)"):
        RagIndex(s, text_embedding=shared_embeddings["text"], stores=pair)
    client.close()
    shutil.rmtree(s.storage, ignore_errors=True)


def test_mmr_runs_in_the_server_engine_as_in_the_embedded_one(tmp_path):
    """`--mmr` on a server: the Query API's MMR picks what qdrant-edge's `Mmr` picks (hand-made vectors)."""
    import uuid

    from llama_index.core.schema import TextNode

    from rag.search.hybrid import edge_mmr_query
    from rag.stores.edge import QdrantEdgeVectorStore

    vectors = {"a": [1, 0, 0], "a2": [0.99, 0.05, 0], "a3": [0.98, 0.08, 0.02], "b": [0.7, 0, 0.7], "c": [0.6, 0.8, 0]}

    def nodes():
        return [TextNode(id_=str(uuid.UUID(int=i + 1)), text=name, embedding=v, metadata={"group": i % 2})
                for i, (name, v) in enumerate(vectors.items())]

    client = QdrantClient(":memory:")
    server = ServerQdrantVectorStore(collection_name="c", client=client)
    assert edge_mmr_query(server, [1, 0, 0], 4, None, 0.5) == ([], [])  # no collection yet
    server.add(nodes())
    query = [1, 0.02, 0.01]
    with QdrantEdgeVectorStore(tmp_path / "edge", exact=True) as edge:
        edge.add(nodes())
        expected = {1.0: ["a", "a2", "a3", "b"], 0.5: ["a", "c", "b", "a3"]}
        for lambda_, names in expected.items():
            for store in (edge, server):
                found, scores = edge_mmr_query(store, query, 4, None, lambda_)
                assert [n.text for n in found] == names
            assert scores == pytest.approx(edge_mmr_query(edge, query, 4, None, lambda_)[1], abs=1e-4)
        filters = MetadataFilters(filters=[MetadataFilter(key="group", value=0)])  # a, a3 and c
        assert [n.text for n in edge_mmr_query(server, query, 4, filters, 0.5)[0]] == \
            [n.text for n in edge_mmr_query(edge, query, 4, filters, 0.5)[0]] == ["a", "c", "a3"]
    client.close()


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_a_damaged_signal_store_is_rebuilt_by_the_command_it_names(backend, open_test_index, open_server_index,
                                                                    corpus):
    """The message says `rag migrate --signals`; that command must then be able to open the index and rebuild."""
    from rag.errors import StorageError

    index = open_test_index() if backend == "edge" else open_server_index()
    ingest(index, [corpus], progress=False)
    if backend == "edge":
        index.close()
        meta = index.signals["text"].path / "rag_signals.json"
        meta.write_text("{not json", encoding="utf-8")
        message = (f"{meta} cannot be read (Expecting property name enclosed in double quotes: line 1 column 2 "
                   "(char 1)); rebuild it with: rag migrate --signals")
        reopened = open_test_index()  # opens: the damage shows when the signals are used
    else:
        index.signals["text"].drop()  # a collection of the wrong kind where the text signals belong
        ServerSignalStore(index.stores.client, "text_signals", "image").ensure(4)
        message = ("the collection 'text_signals' on the Qdrant server is not a text signal store of format 1; "
                   "rebuild it with: rag migrate --signals")
        reopened = RagIndex(index.settings, text_embedding=index.text_embedding,
                            image_embedding=index.image_embedding, stores=index.stores)
    with pytest.raises(StorageError) as err:
        Retriever(reopened).search("moon", top_k=2, image_top_k=1)
    assert str(err.value) == message
    assert upgrade_signals(reopened) == {"text": 3, "image": 3}
    hits = Retriever(reopened).search("moon", top_k=2, image_top_k=1)
    assert next(h for h in hits if h.title == "Moon").signals["bm25"]["rank"] == 1
    reopened.close()
