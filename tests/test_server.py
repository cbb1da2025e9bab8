"""The HTTP API in-process (FastAPI's TestClient): every endpoint, its errors and its limits."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from rag.config import Settings
from rag.server.app import create_app
from rag.server.config import ServerConfig
from server_helpers import make_service, png_bytes, photo_bytes, sse_events

BASE = "http://127.0.0.1:8765"
LOCAL = ("127.0.0.1", 50000)  # the peer address of a client on this machine


def _indexed(root, tiny_models, shared_embeddings):
    """A service over a fresh index of a copy of the test corpus (in `root`)."""
    from conftest import photo

    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "cat.md").write_text("# Cat\n\nThe cat is a small domestic animal that purrs.\n", encoding="utf-8")
    (corpus / "coffee.txt").write_text("Coffee is a drink brewed from roasted coffee beans.\n", encoding="utf-8")
    (corpus / "moon.md").write_text("# Moon\n\nThe Moon is the natural satellite of the Earth.\n", encoding="utf-8")
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(photo(name), corpus / name)
    settings = Settings(storage=root / "storage", text_model=str(tiny_models["text"]),
                        image_model=str(tiny_models["image"]))
    svc = make_service(settings, shared_embeddings)
    svc.ingest([corpus])
    return svc, corpus


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_models, shared_embeddings):
    """One indexed service for the read-only tests of this module."""
    svc, corpus = _indexed(tmp_path_factory.mktemp("server"), tiny_models, shared_embeddings)
    yield svc, corpus
    svc.close()


@pytest.fixture
def service(shared):
    return shared[0]


@pytest.fixture
def corpus(shared):
    return shared[1]


@pytest.fixture
def client(service, corpus):
    app = create_app(service, ServerConfig(allow_ingest=(corpus.resolve(),)))
    with TestClient(app, base_url=BASE, client=LOCAL) as c:
        yield c


@pytest.fixture
def fresh(tmp_path, tiny_models, shared_embeddings):
    """(client, corpus) over an index of its own: for tests that change the index or the corpus."""
    svc, corpus = _indexed(tmp_path, tiny_models, shared_embeddings)
    with TestClient(create_app(svc, ServerConfig(allow_ingest=(corpus.resolve(),))), base_url=BASE, client=LOCAL) as c:
        yield c, corpus
    svc.close()


def test_page_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/static/app.js"' in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    for route in ("/api/info", "/api/search", "/api/ask", "/api/ingest", "/api/media/{node_id}"):
        assert f"<code>{route}</code>" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/static/app.css").status_code == 200


def test_page_has_the_ingest_form(client, corpus):
    page = client.get("/").text
    for part in ('id="ingest-form"', 'id="ingest-path"', 'id="ingest-bar"', 'id="ingest-bad"',
                 '<script src="/static/ingest.js"></script>'):
        assert part in page
    script = client.get("/static/ingest.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert '"/api/ingest"' in script.text and "innerHTML" not in script.text  # server text is never parsed as HTML
    assert client.get("/api/info").json()["server"]["ingest"]["allowed"] == [str(corpus.resolve())]


def test_info(client, service):
    data = client.get("/api/info").json()
    assert {k: c["points"] for k, c in data["collections"].items()} == {"text": 3, "image": 3}
    assert data["storage"] == str(service.settings.storage.resolve())
    assert data["server"]["token_required"] is False
    assert data["server"]["llm"]["configured"] is False and data["server"]["llm"]["backend"] == "none"
    assert data["server"]["ingest"]["running"] is False


def test_search_get_returns_the_same_hits_as_the_service(client, service):
    got = client.get("/api/search", params={"q": "the moon", "top_k": 2, "image_top_k": 1}).json()
    expected = service.search("the moon", top_k=2, image_top_k=1).to_dict()
    assert got == json.loads(json.dumps(expected))
    assert sorted(h["modality"] for h in got["hits"]) == ["image", "text", "text"]  # one fused list


def test_search_get_with_filter(client):
    hits = client.get("/api/search", params={"q": "anything", "filter": "title=Moon"}).json()["hits"]
    assert [(h["modality"], h["title"]) for h in hits] == [("text", "Moon")]


def test_search_post_with_an_uploaded_image_finds_that_image(client, corpus):
    r = client.post("/api/search", data={"q": "", "image_top_k": "3"},
                    files={"image": ("coffee.png", photo_bytes("coffee.png"), "image/png")})
    assert r.status_code == 200, r.text
    hits = [h for h in r.json()["hits"] if h["modality"] == "image"]  # (and its article's passages)
    assert len(hits) == 3 and hits[0]["image_path"] == str((corpus / "coffee.png").resolve())


def test_search_post_with_json_filters(client):
    r = client.post("/api/search", data={"q": "anything", "filters": json.dumps({"title": "Moon"})})
    assert [(h["modality"], h["title"]) for h in r.json()["hits"]] == [("text", "Moon")]


@pytest.mark.parametrize("params, status, message", [
    ({}, 400, "nothing to search for: give a text query, an image (--image PATH), or both"),
    ({"q": "x", "top_k": "101"}, 422, "top_k must be between 0 and 100, got 101"),
    ({"q": "x", "filter": "oops"}, 422, "'oops' is not KEY=VALUE"),
    ({"q": "x" * 2001}, 413, "the query has 2,001 characters; the limit is 2,000"),
])
def test_search_errors(client, params, status, message):
    r = client.get("/api/search", params=params)
    assert (r.status_code, r.json()) == (status, {"error": message})


def test_search_type_error_is_a_json_error(client):
    r = client.get("/api/search", params={"q": "x", "top_k": "many"})
    assert r.status_code == 422
    assert r.json()["error"].startswith("top_k: ")


@pytest.mark.parametrize("name, data, message", [
    ("evil.svg", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>",
     "evil.svg: SVG is a vector format; it is not supported (convert it to PNG)"),
    ("page.png", b"<!doctype html><html><script>alert(1)</script></html>", "page.png: an HTML page, not an image"),
    ("broken.jpg", b"not an image at all", "broken.jpg: not a recognised image format (corrupt or unsupported)"),
    ("../../etc/passwd.png", b"\x89PNG\r\n\x1a\n garbage",
     "passwd.png: corrupt or truncated image (Truncated File Read)"),
])
def test_uploads_are_checked_like_ingested_files(client, name, data, message):
    r = client.post("/api/search", data={"q": "x"}, files={"image": (name, data, "image/png")})
    assert (r.status_code, r.json()) == (400, {"error": message})


def test_upload_limits(service, corpus):
    config = ServerConfig(max_upload_bytes=2000, max_upload_pixels=10_000, max_body_bytes=50_000)
    with TestClient(create_app(service, config), base_url=BASE, client=LOCAL) as c:
        big = c.post("/api/search", data={"q": "x"}, files={"image": ("big.png", b"\x00" * 3000, "image/png")})
        assert (big.status_code, big.json()) == (413, {"error": "the image is larger than the limit of 2,000 bytes"})
        bomb = c.post("/api/search", data={"q": "x"}, files={"image": ("wide.png", png_bytes((200, 200)), "image/png")})
        assert bomb.status_code == 400
        assert bomb.json()["error"] == ("wide.png: 200x200 pixels is over the limit of 10,000 "
                                        "(possible decompression bomb)")
        body = c.post("/api/search", data={"q": "x" * 60_000})
        assert (body.status_code, body.json()) == (413, {"error": "the request body has 60,002 bytes; the limit is 50,000"})


def test_ask_without_llm_streams_sources_then_the_prompt(client):
    r = client.post("/api/ask", json={"question": "What is the Moon?", "top_k": 2, "image_top_k": 1})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [e for e, _ in events] == ["sources", "answer"]
    sources = events[0][1]["sources"]
    assert [s["n"] for s in sources] == [1, 2, 3]
    answer = events[1][1]
    assert answer["answer"] is None and "Question: What is the Moon?" in answer["prompt"]
    assert [s["n"] for s in answer["sources"]] == [1, 2, 3]


def test_ask_with_an_uploaded_image_shows_its_name_not_a_temp_path(client):
    r = client.post("/api/ask", data={"question": "what is this?"},
                    files={"image": ("cat.png", photo_bytes("chelsea.png"), "image/png")})
    events = dict(sse_events(r.text))
    assert events["answer"]["image"] == "cat.png"
    assert events["sources"]["sources"][0]["modality"] in ("text", "image")


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "Ask a question, give an image, or both."),
    ({"question": 3}, 422, "question must be a string"),
    ({"question": "x", "filters": [1]}, 422, 'filters must be a JSON object such as {"title": "Moon"}'),
])
def test_ask_errors(client, body, status, message):
    r = client.post("/api/ask", json=body)
    assert (r.status_code, r.json()) == (status, {"error": message})


def test_ask_with_a_broken_json_body(client):
    r = client.post("/api/ask", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json() == {"error": 'send a JSON object such as {"question": "..."} or a multipart form'}


def test_media_serves_thumbnails_and_files_by_node_id(client, corpus):
    hits = client.get("/api/search", params={"q": "coffee", "top_k": 0, "image_top_k": 3}).json()["hits"]
    coffee = next(h for h in hits if h["image_path"].endswith("coffee.png"))
    full = client.get(f"/api/media/{coffee['node_id']}")
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"
    assert full.content == (corpus / "coffee.png").read_bytes()
    thumb = client.get(f"/api/media/{coffee['node_id']}", params={"size": 100})
    assert thumb.headers["content-type"] == "image/jpeg"
    from io import BytesIO

    from PIL import Image

    assert max(Image.open(BytesIO(thumb.content)).size) == 128  # rounded up to a cached size


@pytest.mark.parametrize("node_id", [
    "..%2F..%2Fetc%2Fpasswd", "00000000-0000-0000-0000-000000000000", "not-an-id",
])
def test_media_refuses_unknown_ids_and_paths(client, node_id):
    r = client.get(f"/api/media/{node_id}")
    assert r.status_code == 404
    assert r.json() == {"error": "no indexed image has this id"} or r.json() == {"error": "not found"}


def test_media_of_a_text_node_is_not_found(client):
    hit = client.get("/api/search", params={"q": "moon", "top_k": 1, "image_top_k": 0}).json()["hits"][0]
    r = client.get(f"/api/media/{hit['node_id']}")
    assert (r.status_code, r.json()) == (404, {"error": "no indexed image has this id"})


def test_media_size_limits(client):
    r = client.get("/api/media/00000000-0000-0000-0000-000000000000", params={"size": 5000})
    assert (r.status_code, r.json()) == (422, {"error": "size must be between 16 and 1024, got 5000"})


def test_ingest_streams_progress_and_the_report(fresh):
    client, corpus = fresh
    (corpus / "new.md").write_text("# Saturn\n\nSaturn has rings.\n", encoding="utf-8")
    (corpus / "broken.jpg").write_bytes(b"not an image at all")
    r = client.post("/api/ingest", json={"paths": [str(corpus)]})
    assert r.status_code == 200
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[0] == "start" and names[-1] == "report" and "plan" in names
    progress = [d for e, d in events if e == "progress"]
    assert {"stage": "Embedding passages", "done": 1, "total": 1} in progress
    report = events[-1][1]
    assert (report["text_nodes"], report["unchanged"], report["ok"]) == (1, 6, False)
    assert report["skipped"] == [{"path": str((corpus / "broken.jpg").resolve()),
                                  "reason": "not a recognised image format (corrupt or unsupported)"}]
    assert client.get("/api/info").json()["collections"]["text"]["points"] == 4


@pytest.mark.parametrize("paths, message", [
    (["/etc"], "/etc: outside the folders this server may ingest ({root})"),
    (["relative/dir"], "relative/dir: give an absolute path (the server does not know your working directory)"),
    (["{root}/../.."], "{root}/../..: outside the folders this server may ingest ({root})"),
    (["{root}/missing"], "{root}/missing: no such file or folder"),
    ([], "give at least one path to ingest"),
])
def test_ingest_path_rules(client, corpus, paths, message):
    root = str(corpus.resolve())
    r = client.post("/api/ingest", json={"paths": [p.format(root=root) for p in paths]})
    assert (r.status_code, r.json()) == (400, {"error": message.format(root=root)})


def test_ingest_refused_when_no_folder_is_allowed(service):
    with TestClient(create_app(service, ServerConfig()), base_url=BASE, client=LOCAL) as c:
        r = c.post("/api/ingest", json={"paths": ["/tmp"]})
    assert r.status_code == 400
    assert r.json()["error"].startswith("this server does not ingest: start it with --allow-ingest DIR")


def test_ingest_symlink_out_of_the_allowed_folder_is_skipped(fresh, tmp_path):
    client, corpus = fresh
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nnot for the index\n", encoding="utf-8")
    (corpus / "link.md").symlink_to(outside / "secret.md")
    report = sse_events(client.post("/api/ingest", json={"paths": [str(corpus)]}).text)[-1][1]
    assert report["text_nodes"] == 0
    # the scan itself refuses links that lead out of the folder (the server's own path check
    # stands behind it for anything that gets past)
    [skipped] = report["skipped"]
    assert skipped["path"].endswith("/corpus/link.md")
    assert skipped["reason"].startswith("a symbolic link") and skipped["reason"].endswith("not followed")


def test_unknown_routes_and_methods(client):
    assert (client.get("/api/nothing").status_code, client.get("/api/nothing").json()) == (404, {"error": "not found"})
    r = client.delete("/api/info")
    assert (r.status_code, r.json()) == (405, {"error": "method not allowed"})


def test_dns_rebinding_host_is_refused(client):
    r = client.get("/api/info", headers={"host": "evil.example:8765"})
    assert r.status_code == 421
    assert r.json() == {"error": "this server answers only to its loopback address, not to host 'evil.example'"}
    assert client.get("/api/info", headers={"host": "localhost:8765"}).status_code == 200


def test_cross_origin_posts_are_refused(client):
    r = client.post("/api/search", data={"q": "x"}, headers={"origin": "http://evil.example"})
    assert (r.status_code, r.json()) == (403, {"error": "cross-origin requests are not allowed (CORS is off)"})
    assert "access-control-allow-origin" not in r.headers
    same = client.post("/api/search", data={"q": "moon"}, headers={"origin": BASE})
    assert same.status_code == 200


def test_token_rule(service):
    token = "s3cret-token-value"
    config = ServerConfig(host="0.0.0.0", token=token)
    with TestClient(create_app(service, config, token=token), base_url="http://10.0.0.5:8765") as c:
        refused = c.get("/api/info")
        assert refused.status_code == 401
        assert refused.json()["error"].startswith("this server needs a token: send 'Authorization: Bearer <token>'")
        assert token not in refused.text
        assert c.get("/api/info", headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = c.get("/api/info", headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and token not in ok.text
        assert c.get("/api/info", cookies={"rag_token": token}).status_code == 200
        assert c.get("/").status_code == 200 and token not in c.get("/").text  # the page asks for it
        assert c.get("/static/app.js").status_code == 200


def test_busy_when_every_slot_is_taken(service):
    import threading

    config = ServerConfig(max_searches=1, queue_seconds=0.2)
    app = create_app(service, config)
    gate = threading.Event()
    original = service.search

    def slow(*args, **kwargs):
        gate.wait(10)
        return original(*args, **kwargs)

    service.search = slow
    try:
        with TestClient(app, base_url=BASE, client=LOCAL) as c:
            results = {}
            first = threading.Thread(target=lambda: results.setdefault("first", c.get("/api/search", params={"q": "moon"})))
            first.start()
            import time

            time.sleep(0.3)
            second = c.get("/api/search", params={"q": "moon"})
            gate.set()
            first.join(10)
        assert (second.status_code, second.json()) == (
            503, {"error": "busy: too many searches are running; try again in a moment"})
        assert results["first"].status_code == 200
    finally:
        service.search = original


def test_slow_search_times_out(service):
    import time

    config = ServerConfig(search_seconds=0.2)
    original = service.search
    service.search = lambda *a, **k: (time.sleep(0.6), original(*a, **k))[1]
    try:
        with TestClient(create_app(service, config), base_url=BASE, client=LOCAL) as c:
            r = c.get("/api/search", params={"q": "moon"})
        assert (r.status_code, r.json()) == (504, {"error": "the search took longer than 0.2 s"})
    finally:
        service.search = original


def test_unexpected_errors_hide_details_and_secrets(service, caplog):
    secret = "sk-very-secret-key"
    original_settings = service.settings
    service.settings = replace(service.settings, llm_api_key=secret)
    original = service.search
    service.search = lambda *a, **k: (_ for _ in ()).throw(RuntimeError(f"boom {secret}"))
    try:
        with TestClient(create_app(service, ServerConfig()), base_url=BASE, client=LOCAL, raise_server_exceptions=False) as c:
            r = c.get("/api/search", params={"q": "moon"})
        assert (r.status_code, r.json()) == (500, {"error": "internal error (the server log has the details)"})
        assert secret not in caplog.text and "boom ***" in caplog.text
    finally:
        service.search = original
        service.settings = original_settings


@pytest.fixture
def with_llm(service):
    """A service over the same index whose LLM is the loopback stand-in (tests/llm_stub.py)."""
    from llm_stub import STUB_KEY, STUB_MODEL, LLMStub

    from rag.service import RagService

    with LLMStub() as stub:
        settings = replace(service.settings, llm="openai-like", llm_base_url=stub.url, llm_model=STUB_MODEL,
                           llm_api_key=STUB_KEY + "-secret-123", llm_vision="false", llm_max_retries=0,
                           llm_timeout=10.0)
        yield RagService(settings, index=service.index), stub


def test_ask_streams_deltas_then_the_cited_answer(with_llm):
    svc, stub = with_llm
    with TestClient(create_app(svc, ServerConfig()), base_url=BASE, client=LOCAL) as c:
        r = c.post("/api/ask", json={"question": "What is the Moon?", "top_k": 2, "image_top_k": 1})
        events = sse_events(r.text)
        info = c.get("/api/info").json()["server"]["llm"]
    names = [e for e, _ in events]
    assert names[0] == "sources" and names[-1] == "answer" and names.count("delta") > 3
    text = "".join(d["text"] for e, d in events if e == "delta")
    answer = events[-1][1]
    assert answer["answer"] == text and text.startswith("This is a stand-in answer to 'What is the Moon?'.")
    sources = events[0][1]["sources"]  # one fused list: the stub cites its first passage and first picture
    first = {kind: next(h["n"] for h in sources if h["modality"] == kind) for kind in ("text", "image")}
    assert [s["n"] for s in answer["cited"]] == sorted(first.values()) and len(sources) == 3
    assert stub.chat_requests()[-1]["json"]["stream"] is True
    assert info == {"backend": "openai-like", "model": "stub-vl", "base_url": stub.url, "vision": False,
                    "configured": True}
    assert "secret-123" not in r.text


def test_ask_when_the_llm_is_down_is_an_error_event_without_the_key(with_llm):
    svc, stub = with_llm
    stub.stop()
    with TestClient(create_app(svc, ServerConfig()), base_url=BASE, client=LOCAL) as c:
        r = c.post("/api/ask", json={"question": "What is the Moon?"})
    events = sse_events(r.text)
    assert [e for e, _ in events] == ["sources", "error"]
    assert events[1][1]["error"] and "secret-123" not in r.text


def test_ask_slot_is_freed_when_the_client_leaves(with_llm):
    svc, _stub = with_llm
    app = create_app(svc, ServerConfig(max_asks=1, queue_seconds=0.5))
    with TestClient(app, base_url=BASE, client=LOCAL) as c:
        with c.stream("POST", "/api/ask", json={"question": "What is the Moon?"}) as first:
            next(first.iter_lines())  # the sources arrived; leave before the answer
        again = c.post("/api/ask", json={"question": "What is the Moon?"})
        assert again.status_code == 200 and sse_events(again.text)[-1][0] == "answer"
