"""Fairness and privacy of `rag serve`: each client address has its share (429 beyond it), a
trickled upload gets 408 without holding up others (real uvicorn, raw socket), and clients on
other machines never see the server's file paths (hits, answers, RagClient, `rag search`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from rag.config import Settings, SettingsError
from rag.server.app import create_app
from rag.server.config import ServerConfig, is_loopback
from server_helpers import LiveServer, make_service, photo_bytes, sse_events

BASE = "http://127.0.0.1:8765"
LOCAL = ("127.0.0.1", 50000)
REMOTE = ("192.0.2.10", 40000)  # a client on another machine (TEST-NET-1)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_models, shared_embeddings):
    """(service, corpus): the test corpus indexed once for this module."""
    from conftest import photo

    root = tmp_path_factory.mktemp("fair")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "cat.md").write_text("# Cat\n\nThe cat is a small domestic animal that purrs.\n", encoding="utf-8")
    (corpus / "moon.md").write_text("# Moon\n\nThe Moon is the natural satellite of the Earth.\n", encoding="utf-8")
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy(photo(name), corpus / name)
    settings = Settings(storage=root / "storage", text_model=str(tiny_models["text"]),
                        image_model=str(tiny_models["image"]))
    svc = make_service(settings, shared_embeddings)
    svc.ingest([corpus])
    yield svc, corpus.resolve()
    svc.close()


# -- settings ---------------------------------------------------------------------------------
def test_server_limits_are_settings_in_the_one_table(tmp_path):
    env = {"RAG_SERVER_CLIENT_REQUESTS": "3", "RAG_SERVER_BODY_SECONDS": "2.5", "RAG_SERVER_MAX_SEARCHES": "4",
           "RAG_SERVER_ALLOW_INGEST": f"{tmp_path}/a:{tmp_path}/b", "RAG_SERVER_TOKEN": "tok-123456"}
    config = ServerConfig.from_env(env)
    assert (config.client_requests, config.body_seconds, config.max_searches, config.token) == (3, 2.5, 4, "tok-123456")
    assert config.allow_ingest == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert ServerConfig.from_env(env, max_searches=9).max_searches == 9  # a command's option wins
    defaults = ServerConfig.from_env({})
    assert defaults == ServerConfig() and (defaults.client_requests, defaults.body_seconds) == (6, 60.0)
    assert "tok-123456" not in repr(Settings.from_env(env))
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"RAG_SERVER_CLIENT_REQUESTS": "-1"})
    assert str(err.value) == "RAG_SERVER_CLIENT_REQUESTS must be at least 0, got '-1'"
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"RAG_SERVER_BODY_SECONDS": "0"})
    assert str(err.value) == "RAG_SERVER_BODY_SECONDS must be above 0, got '0'"


def test_loopback_addresses():
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", "localhost"):
        assert is_loopback(host), host
    for host in ("192.0.2.10", "::ffff:192.0.2.10", "0.0.0.0", "testclient", "example.org"):
        assert not is_loopback(host), host


# -- each client's share ----------------------------------------------------------------------
def test_a_client_over_its_share_gets_429_while_others_are_served(indexed, monkeypatch):
    """Client A holds its 2 requests (slow searches); its third gets 429 at once, with
    Retry-After; client B and a loopback client are served meanwhile; A's share comes back
    when its searches end."""
    service, _corpus = indexed
    gate = threading.Event()
    original = service.search

    def search(request):
        if request.query == "slow":
            gate.wait(20)
        return original(request)

    monkeypatch.setattr(service, "search", search)
    app = create_app(service, ServerConfig(client_requests=2, max_searches=6))

    async def scenario():
        def client(address):
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=address), base_url=BASE)

        async with client(("192.0.2.10", 1)) as a, client(("192.0.2.20", 1)) as b, client(LOCAL) as local:
            held = [asyncio.create_task(a.get("/api/search", params={"q": "slow"})) for _ in range(2)]
            await asyncio.sleep(0.3)
            third = await a.get("/api/search", params={"q": "moon"})
            media = await a.get("/api/media/00000000-0000-0000-0000-000000000000")  # any API request counts
            other = await b.get("/api/search", params={"q": "moon"})
            page = await a.get("/")  # the page and its assets do not count
            locals_ = [asyncio.create_task(local.get("/api/search", params={"q": "slow"})) for _ in range(2)]
            await asyncio.sleep(0.3)
            local_third = await local.get("/api/search", params={"q": "moon"})  # loopback: not counted
            gate.set()
            done = await asyncio.gather(*held, *locals_)
            again = await a.get("/api/search", params={"q": "moon"})
            return third, media, other, page, local_third, done, again

    third, media, other, page, local_third, done, again = asyncio.run(scenario())
    assert third.status_code == 429 and third.headers["retry-after"] == "1"
    assert third.json() == {"error": "too many requests from your address at once (the limit is 2); "
                                     "wait for one to finish, then try again"}
    assert third.headers["x-content-type-options"] == "nosniff"
    assert media.status_code == 429
    assert other.status_code == 200 and other.json()["hits"]
    assert page.status_code == 200
    assert local_third.status_code == 200
    assert [r.status_code for r in done] == [200, 200, 200, 200]
    assert again.status_code == 200
    assert dict(_limits(app).in_flight) == {}  # every share was given back


def _limits(app):
    """The ClientLimits middleware instance of a built app."""
    from rag.server.limits import ClientLimits

    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, ClientLimits):
        layer = getattr(layer, "app", None)
    assert layer is not None
    return layer


def test_a_stream_holds_its_share_until_it_ends(indexed, monkeypatch):
    """An answer stream counts until its last event."""
    service, _corpus = indexed
    gate = threading.Event()
    original = service.stream

    class Held:  # the answer's text waits for the gate
        def __init__(self, inner):
            self.inner, self.sources = inner, inner.sources

        def __iter__(self):
            gate.wait(20)
            return iter(self.inner)

        def get_answer(self):
            return self.inner.get_answer()

    monkeypatch.setattr(service, "stream", lambda request: Held(original(request)))
    app = create_app(service, ServerConfig(client_requests=1))

    async def scenario():
        transport = httpx.ASGITransport(app=app, client=REMOTE)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as a:
            first = asyncio.create_task(a.post("/api/ask", json={"question": "What is the Moon?"}))
            await asyncio.sleep(0.5)
            during = await a.get("/api/info")
            gate.set()
            answered = await first
            after = await a.get("/api/info")
            return during, answered, after

    during, answered, after = asyncio.run(scenario())
    assert during.status_code == 429
    assert [e for e, _ in sse_events(answered.text)] == ["sources", "answer"]
    assert after.status_code == 200


def test_busy_answers_say_when_to_retry(indexed, monkeypatch):
    service, _corpus = indexed
    gate = threading.Event()
    original = service.search
    monkeypatch.setattr(service, "search", lambda r: (gate.wait(20), original(r))[1])
    app = create_app(service, ServerConfig(max_searches=1, queue_seconds=0.2))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=LOCAL), base_url=BASE) as c:
            first = asyncio.create_task(c.get("/api/search", params={"q": "moon"}))
            await asyncio.sleep(0.2)
            second = await c.get("/api/search", params={"q": "moon"})
            gate.set()
            return await first, second

    first, second = asyncio.run(scenario())
    assert first.status_code == 200
    assert (second.status_code, second.headers["retry-after"]) == (503, "1")


# -- a trickled upload --------------------------------------------------------------------------
def _trickle(url, path, content_type, prefix, stop):
    """Send headers promising 5,000 bytes and the body's valid start, then one byte ("a") every
    0.1 s; return (status line, body, seconds until the response, whether the server closed
    the connection, the response's head)."""
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    started = time.perf_counter()
    answered_at = None
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                  "Content-Length: 5000\r\n\r\n").encode() + prefix)
    sock.setblocking(False)
    received = b""
    closed = False
    while time.perf_counter() - started < 10 and not stop.is_set():
        try:
            sock.send(b"a")
        except OSError:
            closed = True
            break
        time.sleep(0.1)
        try:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            received += chunk
            answered_at = answered_at or time.perf_counter()
        except BlockingIOError:
            pass
        except OSError:
            closed = True
            break
    sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    return (head.split(b"\r\n")[0].decode() if head else "", body, started, answered_at, closed,
            head.decode().lower())


@pytest.mark.parametrize("path, content_type, prefix", [
    ("/api/search", "multipart/form-data; boundary=xyz",  # FastAPI reads the form
     b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'),
    ("/api/ask", "application/json", b'{"question": "'),  # the route reads the body itself
])
def test_a_trickled_upload_gets_408_and_others_are_served(settings, shared_embeddings, path, content_type, prefix):
    service = make_service(settings, shared_embeddings)  # the server closes it when it stops
    with LiveServer(settings, service, ServerConfig(body_seconds=1.0)) as live:
        stop = threading.Event()
        result = {}
        worker = threading.Thread(target=lambda: result.setdefault("r", _trickle(live.url, path, content_type, prefix, stop)))
        worker.start()
        time.sleep(0.3)
        info = httpx.get(live.url + "/api/info", trust_env=False, timeout=10)
        search = httpx.get(live.url + "/api/search", params={"q": "moon"}, trust_env=False, timeout=10)
        others_done = time.perf_counter()
        worker.join(15)
        stop.set()
    status, body, started, answered_at, closed, head = result["r"]
    assert info.status_code == 200 and search.status_code == 200
    assert others_done < answered_at  # served while the upload was still trickling
    assert status == "HTTP/1.1 408 Request Timeout"
    assert json.loads(body) == {"error": "the request body did not arrive within 1 s; "
                                         "send it faster or in a smaller request"}
    assert "connection: close" in head
    assert 0.9 <= answered_at - started < 3 and closed


# -- no server paths for clients on other machines ----------------------------------------------
def _no_paths(text, service, corpus):
    assert str(corpus) not in text and str(service.settings.storage) not in text
    assert "rag-upload-" not in text  # the temporary file of an uploaded image


def test_remote_clients_get_names_and_media_urls_instead_of_paths(indexed):
    service, corpus = indexed
    with TestClient(create_app(service, ServerConfig()), base_url=BASE, client=REMOTE) as c:
        r = c.get("/api/search", params={"q": "coffee", "top_k": 2, "image_top_k": 2})
        posted = c.post("/api/search", data={"q": ""}, files={"image": ("mine.png", photo_bytes("coffee.png"), "image/png")})
    assert r.status_code == 200 and posted.status_code == 200
    _no_paths(r.text + posted.text, service, corpus)
    local = service.search("coffee", top_k=2, image_top_k=2).to_dict()["hits"]
    hits = r.json()["hits"]
    assert [h["node_id"] for h in hits] == [h["node_id"] for h in local]  # the same hits, in order
    for mine, full in zip(hits, local):
        name = full["file"].rsplit("/", 1)[1]
        assert (mine["file"], mine["source"], mine["metadata"]["file_path"]) == (name, name, name)
        assert mine["text"] == full["text"] and mine["score"] == full["score"]
        if mine["modality"] == "image":
            assert mine["image_path"] == f"/api/media/{mine['node_id']}"
    image = next(h for h in posted.json()["hits"] if h["modality"] == "image")
    with TestClient(create_app(service, ServerConfig()), base_url=BASE, client=REMOTE) as c:
        served = c.get(image["image_path"])
    assert served.status_code == 200 and served.content == (corpus / image["file"]).read_bytes()


def test_remote_clients_see_folder_and_model_names_in_info_local_ones_the_paths(indexed):
    service, corpus = indexed
    with TestClient(create_app(service, ServerConfig(allow_ingest=(corpus,))), base_url=BASE, client=REMOTE) as c:
        remote = c.get("/api/info").json()
    with TestClient(create_app(service, ServerConfig(allow_ingest=(corpus,))), base_url=BASE, client=LOCAL) as c:
        local = c.get("/api/info").json()
    storage = service.settings.storage
    assert local["storage"] == str(Path(storage).resolve()) or local["storage"] == str(storage)
    assert remote["storage"] == Path(storage).name
    assert remote["models"] == {kind: Path(name).name for kind, name in local["models"].items()}
    assert remote["collections"] == local["collections"]
    assert str(storage) not in json.dumps({k: v for k, v in remote.items() if k != "server"})
    assert remote["server"]["ingest"]["allowed"] == [str(corpus)]  # clients name folders under these


def test_remote_answers_name_no_paths_and_local_ones_keep_them(indexed):
    service, corpus = indexed
    question = {"question": "What is the Moon?", "top_k": 1, "image_top_k": 1}
    with TestClient(create_app(service, ServerConfig()), base_url=BASE, client=REMOTE) as c:
        remote = c.post("/api/ask", json=question)
        upload = c.post("/api/ask", data={"question": "what is this?"},
                        files={"image": ("cat.png", photo_bytes("chelsea.png"), "image/png")})
    with TestClient(create_app(service, ServerConfig()), base_url=BASE, client=LOCAL) as c:
        local = c.post("/api/ask", json=question)
        local_upload = c.post("/api/ask", data={"question": "what is this?"},
                              files={"image": ("cat.png", photo_bytes("chelsea.png"), "image/png")})
    _no_paths(remote.text + upload.text, service, corpus)
    events = dict(sse_events(remote.text))
    answer = events["answer"]
    image = next(s for s in answer["sources"] if s["modality"] == "image")
    assert image["image_path"] == f"/api/media/{image['node_id']}"
    assert events["sources"]["sources"] == answer["sources"]
    assert "Question: What is the Moon?" in answer["prompt"] and '[1] Passage from "Moon" (moon.md)' in answer["prompt"]
    assert f"<image [{image['n']}]: /api/media/{image['node_id']}>" in answer["prompt"]
    assert {"image": f"/api/media/{image['node_id']}", "n": image["n"]} in answer["prompt_parts"]
    # the uploaded image keeps the name the client gave it, for everyone
    assert dict(sse_events(upload.text))["answer"]["image"] == "cat.png"
    assert "rag-upload-" not in local_upload.text
    local_answer = dict(sse_events(local.text))["answer"]
    assert str(corpus) in json.dumps(local_answer["sources"])  # this machine: the paths, for display


def test_rag_client_and_rag_search_through_a_remote_server_show_media_urls(indexed, monkeypatch):
    """RagClient turns media paths into absolute URLs; `rag search` prints them for images."""
    import rag.cli
    import rag.cli.common
    from rag.client import RagClient

    service, corpus = indexed
    client = RagClient(BASE)
    client._http.close()
    client._http = TestClient(create_app(service, ServerConfig()), base_url=BASE, client=REMOTE)
    result = client.search("coffee", top_k=1, image_top_k=1)
    image = next(h for h in result.hits if h.modality == "image")
    assert image.image_path == f"{BASE}/api/media/{image.node_id}"
    assert client._http.get(image.image_path).status_code == 200
    answer = client.ask("What is the Moon?", top_k=0, image_top_k=1)
    assert answer.sources[0].image_path == f"{BASE}/api/media/{answer.sources[0].node_id}"
    assert {"image": answer.sources[0].image_path, "n": 1} in answer.prompt_parts
    monkeypatch.setattr(rag.cli.common, "open_service", lambda settings: client)
    out = CliRunner().invoke(rag.cli.main, ["search", "coffee", "--top-k", "0", "--image-top-k", "1"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith(" 1. [image ") and lines[0].endswith(f": {BASE}/api/media/{image.node_id}")
    assert str(corpus) not in out.output
