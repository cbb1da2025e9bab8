"""Against a real uvicorn on a loopback port: the advertisement, clients through the server
(`RagService.connect`, `open_service`, another process at the same time), the second-server
message, stale advertisements, and SIGTERM in the middle of an ingest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from rag.client import RagClient
from rag.errors import RagError, StorageError
from rag.server.advert import check_not_running, resolve_token
from rag.server.config import ServerConfig
from rag.client import SERVER_FILE, running_server, server_token
from rag.service import RagService, open_service
from server_helpers import LiveServer, make_service, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def live(settings, shared_embeddings, corpus):
    service = make_service(settings, shared_embeddings)
    service.ingest([corpus])
    with LiveServer(settings, service, ServerConfig(allow_ingest=(corpus.resolve(),))) as server:
        yield server


def test_advertisement_and_page(live, settings):
    advert = json.loads((settings.storage / SERVER_FILE).read_text())
    assert advert["url"] == live.url and advert["pid"] == os.getpid()
    assert advert["url"].startswith("http://127.0.0.1:") and advert["token_required"] is False
    assert "token" not in json.dumps(advert).replace("token_required", "").replace("token_file", "")
    assert running_server(settings.storage)["url"] == live.url
    page = httpx.get(live.url + "/", trust_env=False)
    assert page.status_code == 200 and "<title>rag" in page.text
    assert any(m.startswith(f"rag serve: {live.url} (storage ") for m in live.messages)


def test_client_through_the_server_has_the_service_api(live, settings, corpus):
    client = RagService.connect(settings)
    assert isinstance(client, RagClient) and client.url == live.url
    with client:
        result = client.search("the moon", top_k=2, image_top_k=1)
        assert sorted(h.modality for h in result.hits) == ["image", "text", "text"]  # one fused list
        assert result.to_dict() == json.loads(json.dumps(live.service.search("the moon", top_k=2, image_top_k=1).to_dict()))
        by_image = client.search(image=corpus / "coffee.png")
        assert by_image.hits[0].image_path == str((corpus / "coffee.png").resolve())
        info = client.info()
        assert info == live.service.info()
        answer = client.ask("What is the Moon?", top_k=1, image_top_k=0)
        assert answer.answer is None and "Question: What is the Moon?" in answer.prompt
        assert [s.n for s in answer.sources] == [1]
        (corpus / "saturn.md").write_text("# Saturn\n\nSaturn has rings.\n", encoding="utf-8")
        report = client.ingest([corpus])
        assert (report.text_nodes, report.unchanged, report.ok) == (1, 6, True)
        assert client.info()["collections"]["text"]["points"] == 4
        with pytest.raises(RagError, match=r"^nothing to search for"):
            client.search("")
        with pytest.raises(RagError) as err:
            client.ingest(["/etc"])
        assert str(err.value) == (f"/etc: outside the folders this server may ingest ({corpus.resolve()}) "
                                  f"(HTTP 400 from {live.url})")


def test_open_service_picks_the_server_unless_told_not_to(live, settings):
    with open_service(settings) as svc:
        assert isinstance(svc.remote, RagClient) and svc.remote.url == live.url
        assert svc.info() == live.service.info()
        with pytest.raises(RagError, match="owned by the rag serve at"):
            svc.retriever
    with RagService(settings) as svc:  # plain RagService finds the server too
        assert isinstance(svc.remote, RagClient)
    with pytest.raises(StorageError, match="already open in this process"):
        open_service(settings, no_server=True)


SEARCHER = textwrap.dedent(
    """
    import json, sys, time
    from rag.config import Settings
    from rag.service import open_service
    settings = Settings.from_env()
    started = time.perf_counter()
    svc = open_service(settings)
    hits = [svc.search("the moon", top_k=1, image_top_k=1).to_dict() for _ in range(5)][-1]["hits"]
    print(json.dumps({"kind": type(svc.remote).__name__, "hits": [h["title"] for h in hits],
                      "seconds": time.perf_counter() - started}))
    """
)


def test_another_process_and_this_one_search_at_the_same_time(live, settings):
    """A terminal (`rag search`-style, another process) and a notebook (RagService through the
    client, this process) use one index at the same time."""
    env = {**os.environ, "RAG_STORAGE": str(settings.storage), "RAG_TEXT_MODEL": settings.text_model,
           "RAG_IMAGE_MODEL": settings.image_model, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SEARCHER], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    client = RagService.connect(settings)
    expected = [h.title for h in live.service.search("the moon", top_k=1, image_top_k=1).hits]
    titles = set()
    while proc.poll() is None:
        titles.add(client.search("the moon", top_k=1, image_top_k=0).hits[0].title)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["kind"] == "RagClient"
    assert data["hits"] == expected and len(expected) == 2
    assert titles == {expected[0]}
    client.close()


def test_searches_go_on_during_an_ingest(live, settings, corpus):
    for i in range(40):
        (corpus / f"extra{i}.md").write_text(f"# Extra {i}\n\nFiller article number {i} about stones.\n", encoding="utf-8")
    client = RagService.connect(settings)
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("report", client.ingest([corpus])))
    worker.start()
    searches = 0
    while worker.is_alive():
        assert client.search("the moon", top_k=1, image_top_k=1).hits
        searches += 1
    worker.join()
    assert done["report"].text_nodes == 40 and searches >= 1
    client.close()


def test_busy_second_ingest(live, settings, corpus):
    gate = threading.Event()
    original = live.service.index.add

    def slow_add(*args, **kwargs):
        gate.wait(10)
        return original(*args, **kwargs)

    live.service.index.add = slow_add
    (corpus / "slow.md").write_text("# Slow\n\nA slow article.\n", encoding="utf-8")
    try:
        first = RagService.connect(settings)
        worker = threading.Thread(target=lambda: first.ingest([corpus]))
        worker.start()
        assert wait_for(lambda: live.service.index is not None and
                        httpx.get(live.url + "/api/info", trust_env=False).json()["server"]["ingest"]["running"])
        with pytest.raises(RagError, match=r"^busy: an ingest is already running; try again when it has finished"):
            RagService.connect(settings).ingest([corpus])
        gate.set()
        worker.join(30)
    finally:
        gate.set()
        live.service.index.add = original


CLI_SEARCH_MODULES = textwrap.dedent(
    """
    import sys
    from rag.cli import main
    try:
        main(["search", "the moon", "--top-k", "1", "--image-top-k", "0", "--json"])
    except SystemExit as exc:
        print("modules", "trio" in sys.modules, "httpx._main" in sys.modules, exc.code, file=sys.stderr)
    """
)


def test_rag_search_through_a_server_imports_neither_trio_nor_httpx_cli(live, settings):
    """A fresh `rag search` through the server skips two modules httpx would import and never use
    (trio is installed here: selenium brings it); httpx still works, and so does trio afterwards."""
    import trio  # noqa: F401  (installed, so httpcore would import it)

    env = {**os.environ, "RAG_STORAGE": str(settings.storage), "RAG_TEXT_MODEL": settings.text_model,
           "RAG_IMAGE_MODEL": settings.image_model, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CLI_SEARCH_MODULES], env=env, capture_output=True, text=True,
                          timeout=120)
    assert json.loads(proc.stdout)["hits"][0]["title"] == "Moon"
    assert proc.stderr.strip().splitlines()[-1] == "modules False False 0"
    from rag.cli.common import lean_http_imports

    with lean_http_imports():
        assert sys.modules.get("trio") is not None  # already imported: left alone
    assert "httpx._main" not in sys.modules or sys.modules["httpx._main"] is not None


def test_stale_advertisement_is_ignored_and_removed(settings):
    settings.storage.mkdir(parents=True)
    path = settings.storage / SERVER_FILE
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": dead.pid}))
    assert running_server(settings.storage) is None
    assert not path.exists()
    assert RagService.connect(settings) is None
    check_not_running(settings.storage)  # no error: nothing runs
    path.write_text("{not json")
    assert running_server(settings.storage) is None


def test_a_live_advertisement_blocks_a_second_server(settings):
    settings.storage.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (settings.storage / SERVER_FILE).write_text(json.dumps({"url": "http://127.0.0.1:8765", "pid": holder.pid}))
        with pytest.raises(StorageError) as err:
            check_not_running(settings.storage)
        assert str(err.value) == (
            f"a rag server already owns {settings.storage}: pid {holder.pid} at http://127.0.0.1:8765. "
            "Use it (rag commands and RagService go through it), or stop it first "
            f"(kill {holder.pid}).")
    finally:
        holder.kill()
        holder.wait()


def test_token_for_a_non_loopback_address_goes_to_a_private_file(settings, monkeypatch):
    monkeypatch.delenv("RAG_SERVER_TOKEN", raising=False)
    token, path = resolve_token(settings.storage, ServerConfig(host="0.0.0.0"))
    assert len(token) >= 40 and path == settings.storage / "server.token"
    assert path.read_text().strip() == token
    assert path.stat().st_mode & 0o777 == 0o600
    assert server_token(settings.storage, {"token_file": str(path)}) == token
    assert resolve_token(settings.storage, ServerConfig(host="127.0.0.1")) == (None, None)
    assert resolve_token(settings.storage, ServerConfig(host="0.0.0.0", token="given")) == ("given", None)
    monkeypatch.setenv("RAG_SERVER_TOKEN", "from-env")
    assert server_token(settings.storage, {"token_file": str(path)}) == "from-env"


def test_live_token_server_refuses_without_and_keeps_the_token_out_of_logs(settings, shared_embeddings, monkeypatch, caplog):
    token = "live-token-123456"
    service = make_service(settings, shared_embeddings)
    with LiveServer(settings, service, ServerConfig(token=token)) as server:
        refused = httpx.get(server.url + "/api/info", trust_env=False)
        assert refused.status_code == 401 and token not in refused.text
        monkeypatch.setenv("RAG_SERVER_TOKEN", token)
        client = RagService.connect(settings)
        assert client.info()["collections"]["text"]["points"] == 0
        client.close()
        assert json.loads((settings.storage / SERVER_FILE).read_text())["token_required"] is True
    assert token not in caplog.text and all(token not in m for m in server.messages)


def _serve_cmd(settings, corpus, extra=""):
    return [sys.executable, "-c", textwrap.dedent(f"""
        import time, sys
        import rag.index.ingest as ingest_module
        ingest_module.TEXT_GROUP = 4  # many small commit groups
        original = ingest_module.Ingestor.commit
        def slow(self, items):
            original(self, items)
            time.sleep(0.3)
        ingest_module.Ingestor.commit = slow
        {extra}
        from rag.cli import main
        sys.argv = ["rag", "serve", "--port", "0", "--allow-ingest", {str(corpus)!r}]
        main()
        """)]


def _env(settings):
    return {**os.environ, "RAG_STORAGE": str(settings.storage), "RAG_TEXT_MODEL": settings.text_model,
            "RAG_IMAGE_MODEL": settings.image_model, "PYTHONPATH": str(ROOT)}


def test_sigterm_during_an_ingest_finishes_the_commit_group(settings, tmp_path):
    corpus = tmp_path / "many"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"a{i:02d}.md").write_text(f"# Article {i}\n\nShort article {i}.\n", encoding="utf-8")
    proc = subprocess.Popen(_serve_cmd(settings, corpus), env=_env(settings), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: running_server(settings.storage) is not None or proc.poll() is not None, 90)
        advert = running_server(settings.storage)
        assert advert is not None, proc.communicate()[1]
        second = subprocess.run([sys.executable, "-m", "rag.cli", "serve", "--port", "0"], env=_env(settings),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"Error: a rag server already owns {settings.storage}: pid {proc.pid} at {advert['url']}. "
            f"Use it (rag commands and RagService go through it), or stop it first (kill {proc.pid}).")
        client = RagClient(advert["url"])
        events, close = client._events("POST", "/api/ingest", json={"paths": [str(corpus)]})
        seen = []
        for event, data in events:
            seen.append((event, data))
            if event == "progress" and data["done"] >= 4 and not any(e == "sigterm" for e, _ in seen):
                proc.send_signal(signal.SIGTERM)
                seen.append(("sigterm", None))
        close()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "rag serve: stopped; the index is closed." in err
    report = seen[-1][1]
    assert seen[-1][0] == "report" and report["stopped"] is True
    assert 4 <= report["text_nodes"] < 30 and report["text_nodes"] % 4 == 0
    assert not (settings.storage / SERVER_FILE).exists()
    from rag.index.core import RagIndex

    with RagIndex(settings) as index:
        assert len(index.ledger.files) == report["files_indexed"] == report["text_nodes"]
        assert index.counts()["text"] == report["text_nodes"]
        from rag.index.ingest import ingest

        again = ingest(index, [corpus], progress=False)
        assert (again.unchanged, again.text_nodes) == (report["text_nodes"], 30 - report["text_nodes"])
        assert index.counts()["text"] == 30


def test_serve_demo_indexes_the_sample_and_serves_it(settings):
    """`make serve` runs `rag serve --demo`: the demo's index (the bundled sample, indexed
    first), with the configured models."""
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--demo", "--port", "0"], env=_env(settings),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: running_server(settings.storage) is not None or proc.poll() is not None, 120)
        advert = running_server(settings.storage)
        assert advert is not None, proc.communicate()[1]
        info = httpx.get(advert["url"] + "/api/info", trust_env=False, timeout=30).json()
        hits = httpx.get(advert["url"] + "/api/search", params={"q": "coffee"}, trust_env=False, timeout=30).json()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert info["storage"] == str(settings.storage.resolve())
    passages = info["collections"]["text"]["points"]
    assert info["collections"]["image"]["points"] == 16 and passages > 0 and hits["hits"]
    assert (f"The sample is indexed in {settings.storage}: {passages} passages and 16 images "
            f"(30 new files).") in err.splitlines()
