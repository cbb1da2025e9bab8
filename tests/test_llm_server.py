"""The query engine against a stand-in OpenAI-compatible (and Ollama) server on 127.0.0.1.

The server records every request, so the tests check what a real server would receive:
passages in the prompt, images as image_url parts with base64 data: URLs, streaming (SSE),
and the error answers (401, 400 image refused, 500) plus refused connections and timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("llama_index.llms.openai_like")

from llama_index.core.base.response.schema import (  # noqa: E402
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.schema import QueryBundle  # noqa: E402

from rag.answer import llms  # noqa: E402
from conftest import FakeRetriever
from rag.answer.engine import RagQueryEngine  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.types import Hit  # noqa: E402
from rag.answer.llms import (  # noqa: E402
    ImagesRefusedError,
    LLMAuthError,
    LLMConnectionError,
    LLMServerError,
    LLMTimeoutError,
    MissingExtraError,
)

KEY = "sk-test-Sup3rSecretKey-0123456789"
WRONG_KEY = "sk-wrong-An0therSecret-9876543210"
REPLY = "The tower was finished in 1889 [1]. At night it is lit in gold [3]."


# --------------------------------------------------------------------------- stand-in server


class StandIn:
    """An OpenAI-compatible /v1/chat/completions and Ollama /api/chat on a random port."""

    def __init__(self, reply=REPLY, key=KEY, refuse_images=False, delay=0.0, fail=None):
        self.reply = reply
        self.key = key
        self.refuse_images = refuse_images
        self.delay = delay
        self.fail = fail  # (status, message) to answer every request with
        self.requests: list[dict] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send_json(self, status, data):
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                standin.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "json": body}
                )
                try:
                    if self.path.endswith("/chat/completions"):
                        standin._openai(self, body)
                    elif self.path == "/api/chat":
                        standin._ollama(self, body)
                    else:
                        self._send_json(404, {"error": {"message": "no such route"}})
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _chunks(self) -> list[str]:
        words = self.reply.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]

    def _openai(self, h, body):
        auth = h.headers.get("Authorization", "")
        if self.key and auth != f"Bearer {self.key}":
            given = auth.removeprefix("Bearer ")
            # Like some servers, echo the key back: our errors must not repeat it.
            return h._send_json(401, {"error": {
                "message": f"Incorrect API key provided: {given}", "type": "invalid_request_error",
                "code": "invalid_api_key"}})
        if self.fail:
            status, message = self.fail
            return h._send_json(status, {"error": {"message": message, "type": "server_error"}})
        has_images = any(
            isinstance(m.get("content"), list)
            and any(p.get("type") == "image_url" for p in m["content"])
            for m in body.get("messages", [])
        )
        if self.refuse_images and has_images:
            return h._send_json(400, {"error": {
                "message": "Invalid content type. image_url is only supported by certain models.",
                "type": "invalid_request_error"}})
        if self.delay:
            time.sleep(self.delay)
        model = body.get("model", "m")
        if not body.get("stream"):
            return h._send_json(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.reply}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            })
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        for i, piece in enumerate(self._chunks()):
            delta = {"content": piece}
            if i == 0:
                delta["role"] = "assistant"
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                     "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            h.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            h.wfile.flush()
        last = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        h.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        h.wfile.flush()

    def _ollama(self, h, body):
        model = body.get("model", "m")
        base = {"model": model, "created_at": "2024-01-01T00:00:00Z"}
        if not body.get("stream"):
            return h._send_json(200, {**base, "done": True, "done_reason": "stop",
                                      "message": {"role": "assistant", "content": self.reply}})
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson")
        h.send_header("Connection", "close")
        h.end_headers()
        for piece in self._chunks():
            line = {**base, "done": False, "message": {"role": "assistant", "content": piece}}
            h.wfile.write((json.dumps(line) + "\n").encode())
            h.wfile.flush()
        end = {**base, "done": True, "done_reason": "stop",
               "message": {"role": "assistant", "content": ""}}
        h.wfile.write((json.dumps(end) + "\n").encode())

    # helpers for assertions
    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def user_parts(request: dict) -> list[dict]:
    """The content parts of the user message of a recorded chat request."""
    user = [m for m in request["json"]["messages"] if m["role"] == "user"][0]
    content = user["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def prompt_text(request: dict) -> str:
    texts = []
    for m in request["json"]["messages"]:
        c = m["content"]
        texts.extend([c] if isinstance(c, str) else [p["text"] for p in c if p["type"] == "text"])
    return "\n".join(texts)


def image_urls(request: dict) -> list[str]:
    return [p["image_url"]["url"] for p in user_parts(request) if p["type"] == "image_url"]


def decode_data_url(url: str) -> Image.Image:
    head, b64 = url.split(",", 1)
    assert head in ("data:image/jpeg;base64", "data:image/png;base64"), head
    return Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    night = tmp_path / "tower_night.jpg"
    Image.new("RGB", (1200, 900), (20, 20, 120)).save(night)
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (64, 48), (255, 0, 0, 128)).save(logo)
    question = tmp_path / "question.png"
    Image.new("RGB", (300, 200), (0, 200, 0)).save(question)
    return {"night": night, "logo": logo, "question": question}


@pytest.fixture
def hits(images) -> list[Hit]:
    url = "https://en.wikipedia.org/wiki/Eiffel_Tower"
    return [
        Hit("text", 0.9, "t1", url, title="Eiffel Tower", url=url,
            text="The Eiffel Tower was completed in 1889 for the World's Fair."),
        Hit("text", 0.8, "t2", url, title="Eiffel Tower", url=url,
            text="It is 330 metres tall and was the tallest structure until 1930."),
        Hit("image", 0.7, "i1", url, title="Eiffel Tower", url=url,
            text="The tower lit at night", image_path=str(images["night"])),
        Hit("image", 0.6, "i2", "data/logo.png", title="Logo",
            text="A red logo", image_path=str(images["logo"])),
    ]




def engine_for(server_url, hits, **kw) -> RagQueryEngine:
    defaults = dict(llm="openai-like", llm_base_url=server_url, llm_model="qwen2.5-vl-7b-instruct",
                    llm_api_key=KEY, llm_max_retries=0, llm_timeout=10.0)
    defaults.update(kw)
    streaming = defaults.pop("streaming", False)
    return RagQueryEngine.from_settings(Settings(**defaults), FakeRetriever(hits),
                                        streaming=streaming)


@pytest.fixture
def llm_env(monkeypatch):
    for name in ("RAG_LLM", "RAG_LLM_MODEL", "RAG_LLM_BASE_URL", "RAG_LLM_API_KEY",
                 "RAG_LLM_VISION", "RAG_LLM_TIMEOUT", "RAG_LLM_MAX_RETRIES", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    def set_env(server, **extra):
        env = {"RAG_LLM": "openai-like", "RAG_LLM_BASE_URL": server.url,
               "RAG_LLM_MODEL": "qwen2.5-vl-7b-instruct", "RAG_LLM_API_KEY": KEY, **extra}
        for k, v in env.items():
            monkeypatch.setenv(k, v)

    return set_env


# --------------------------------------------------------------------------- what the server receives


def test_passages_and_images_reach_the_server(hits, images):
    with StandIn() as server:
        engine = engine_for(server.url, hits)
        answer = engine.ask("When was the tower finished?", image=images["question"])
    (request,) = server.chat_requests()
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["json"]
    assert body["model"] == "qwen2.5-vl-7b-instruct"
    assert not body.get("stream")
    assert body["messages"][0]["role"] == "system"
    text = prompt_text(request)
    assert '[1] Passage from "Eiffel Tower" (https://en.wikipedia.org/wiki/Eiffel_Tower)' in text
    assert "The Eiffel Tower was completed in 1889 for the World's Fair." in text
    assert "[2] Passage from" in text and "330 metres tall" in text
    assert "[3] Image from" in text and "Caption: The tower lit at night" in text
    assert "[4] Image from" in text and "Caption: A red logo" in text
    assert "Question: When was the tower finished?" in text
    assert "{context_str}" not in json.dumps(body)

    # Each retrieved image, then the question image, as image_url parts right after their caption.
    parts = user_parts(request)
    kinds = [p["type"] for p in parts]
    assert kinds.count("image_url") == 3
    urls = image_urls(request)
    night, logo, question = (decode_data_url(u) for u in urls)
    assert urls[0].startswith("data:image/jpeg;base64,")
    assert max(night.size) == 768 and night.size == (768, 576)  # resized from 1200x900
    assert urls[1].startswith("data:image/png;base64,")  # transparency kept
    assert logo.size == (64, 48) and logo.mode == "RGBA"
    assert question.size == (300, 200)
    before_first_image = parts[kinds.index("image_url") - 1]["text"]
    assert before_first_image.rstrip().endswith("Caption: The tower lit at night")
    assert "comes with this image from the user" in parts[-3]["text"]

    assert answer.answer == REPLY
    assert answer.vision is True
    assert [s.n for s in answer.cited] == [1, 3]


def test_citations_map_to_the_right_sources(hits):
    reply = "Finished in 1889 [1], 330 m tall [2, 1]. Night view [3]; logo [4-4]. Bogus [9]."
    with StandIn(reply=reply) as server:
        answer = engine_for(server.url, hits).ask("Tell me about the tower")
    cited = answer.to_dict()["cited"]
    assert [c["n"] for c in cited] == [1, 2, 3, 4]
    assert cited[0]["modality"] == "text" and "1889" in cited[0]["text"]
    assert cited[0]["source"] == "https://en.wikipedia.org/wiki/Eiffel_Tower"
    assert cited[0]["title"] == "Eiffel Tower"
    assert cited[2]["modality"] == "image" and cited[2]["image_path"].endswith("tower_night.jpg")
    assert cited[3]["image_path"].endswith("logo.png")
    assert answer.unknown_citations == [9]
    assert "prompt" not in answer.to_dict()


def test_text_only_model_gets_captions_not_pixels(hits, images):
    with StandIn() as server:
        engine = engine_for(server.url, hits, llm_model="llama3.1:8b")  # not a vision model
        assert engine.vision is False
        answer = engine.ask("What is shown?", image=images["question"])
    (request,) = server.chat_requests()
    assert image_urls(request) == []
    text = prompt_text(request)
    assert "Caption: The tower lit at night" in text
    assert "The image itself is not shown; rely on its caption." in text
    assert "question.png, which this model cannot see" in text
    assert answer.vision is False


def test_python_streaming(hits):
    with StandIn() as server:
        stream = engine_for(server.url, hits).stream("When?")
        assert [s.n for s in stream.sources] == [1, 2, 3, 4]
        deltas = list(stream)
    assert len(deltas) > 3
    assert "".join(deltas) == REPLY
    assert server.chat_requests()[0]["json"]["stream"] is True
    answer = stream.answer
    assert answer.answer == REPLY and [s.n for s in answer.cited] == [1, 3]


def test_llamaindex_query_engine_protocol(hits, images):
    with StandIn() as server:
        engine = engine_for(server.url, hits)
        response = engine.query(QueryBundle("When?", image_path=str(images["question"])))
        assert isinstance(response, Response)
        assert response.response == REPLY
        assert [n.node.metadata["n"] for n in response.source_nodes] == [1, 2, 3, 4]
        assert response.source_nodes[2].node.image_path.endswith("tower_night.jpg")
        assert [c["n"] for c in response.metadata["cited"]] == [1, 3]
        assert len(image_urls(server.chat_requests()[-1])) == 3  # question image sent too
        assert engine.retriever.calls[-1]["image"] == str(images["question"])

        streaming = engine_for(server.url, hits, streaming=True)
        sresp = streaming.query("When?")
        assert isinstance(sresp, StreamingResponse)
        assert len(sresp.source_nodes) == 4
        assert sresp.get_response().response == REPLY
        assert [c["n"] for c in sresp.metadata["cited"]] == [1, 3]
        assert server.chat_requests()[-1]["json"]["stream"] is True

        aresp = asyncio.run(engine.aquery("When?"))
        assert aresp.response == REPLY

        async def astream():
            r = await streaming.aquery("When?")
            assert isinstance(r, AsyncStreamingResponse)
            out = [d async for d in r.async_response_gen()]
            return out, r.metadata

        deltas, metadata = asyncio.run(astream())
        assert "".join(deltas) == REPLY and len(deltas) > 3
        assert [c["n"] for c in metadata["cited"]] == [1, 3]


def test_ollama_receives_images(hits, images):
    pytest.importorskip("llama_index.llms.ollama")
    with StandIn() as server:
        settings = Settings(llm="ollama", llm_base_url=server.root, llm_model="llava:7b")
        engine = RagQueryEngine.from_settings(settings, FakeRetriever(hits))
        answer = engine.ask("When?", image=images["question"])
        stream = engine.stream("When?")
        streamed = "".join(stream)
    first = server.requests[0]
    assert first["path"] == "/api/chat"
    user = [m for m in first["json"]["messages"] if m["role"] == "user"][0]
    assert "[1] Passage from" in user["content"]
    assert len(user["images"]) == 3
    assert max(Image.open(io.BytesIO(base64.b64decode(user["images"][0]))).size) == 768
    assert answer.answer == REPLY and [s.n for s in answer.cited] == [1, 3]
    assert streamed == REPLY and server.requests[1]["json"]["stream"] is True


# --------------------------------------------------------------------------- CLI


def test_cli_streams_and_lists_sources(hits, fake_retrieval_module, llm_env):
    from rag.cli import main

    retriever = fake_retrieval_module(FakeRetriever(hits))
    with StandIn() as server:
        llm_env(server)
        result = CliRunner().invoke(main, ["ask", "When was it finished?", "--top-k", "2"])
        assert result.exit_code == 0, result.output
        assert server.chat_requests()[0]["json"]["stream"] is True
        assert result.output.startswith(REPLY)
        assert "Sources:\n  [1] Eiffel Tower - https://en.wikipedia.org/wiki/Eiffel_Tower\n" in result.output
        assert "[2] Eiffel Tower - https://en.wikipedia.org/wiki/Eiffel_Tower  (not cited)" in result.output
        assert "[3] image: Eiffel Tower - " in result.output
        assert retriever.calls[-1]["top_k"] == 2

        result = CliRunner().invoke(main, ["ask", "When?", "--no-stream"])
        assert result.exit_code == 0, result.output
        assert not server.chat_requests()[-1]["json"].get("stream")
        assert result.output.startswith(REPLY + "\n")

        result = CliRunner().invoke(main, ["ask", "When?", "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["answer"] == REPLY
        assert [c["n"] for c in data["cited"]] == [1, 3]
        assert data["sources"][0]["text"].startswith("The Eiffel Tower")
        assert data["llm"]["backend"] == "openai-like"
        assert KEY not in result.output


def test_cli_error_never_shows_the_key(hits, fake_retrieval_module, llm_env):
    from rag.cli import main

    fake_retrieval_module(FakeRetriever(hits))
    with StandIn(key=KEY) as server:
        llm_env(server, RAG_LLM_API_KEY=WRONG_KEY)
        result = CliRunner().invoke(main, ["ask", "When?"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: The LLM server at {server.url} rejected the API key (HTTP 401). "
        "Set a valid key in RAG_LLM_API_KEY (or OPENAI_API_KEY for RAG_LLM=openai).\n"
    )
    assert WRONG_KEY not in result.output


# --------------------------------------------------------------------------- errors


def _assert_key_hidden(error: BaseException, caplog, *keys: str) -> None:
    shown = "".join(traceback.format_exception(error)) + repr(error) + caplog.text
    for key in keys:
        assert key not in shown


def test_wrong_key_401(hits, caplog):
    caplog.set_level(logging.DEBUG)
    with StandIn(key=KEY) as server:
        engine = engine_for(server.url, hits, llm_api_key=WRONG_KEY)
        assert WRONG_KEY not in repr(engine.llm) and WRONG_KEY not in repr(engine)
        with pytest.raises(LLMAuthError) as info:
            engine.ask("When?")
    assert str(info.value) == (
        f"The LLM server at {server.url} rejected the API key (HTTP 401). "
        "Set a valid key in RAG_LLM_API_KEY (or OPENAI_API_KEY for RAG_LLM=openai)."
    )
    # The server echoed the wrong key in its body; it appears nowhere on our side.
    _assert_key_hidden(info.value, caplog, WRONG_KEY)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_wrong_key_401_while_streaming(hits, caplog):
    caplog.set_level(logging.DEBUG)
    with StandIn(key=KEY) as server:
        stream = engine_for(server.url, hits, llm_api_key=WRONG_KEY).stream("When?")
        with pytest.raises(LLMAuthError) as info:
            list(stream)
    _assert_key_hidden(info.value, caplog, WRONG_KEY)


def test_image_refused_with_vision_forced(hits, caplog):
    caplog.set_level(logging.DEBUG)
    with StandIn(refuse_images=True) as server:
        engine = engine_for(server.url, hits, llm_model="my-model", llm_vision="true")
        with pytest.raises(ImagesRefusedError) as info:
            engine.ask("When?")
    assert str(info.value) == (
        f"The model 'my-model' at {server.url} refused the images (HTTP 400: Invalid content "
        "type. image_url is only supported by certain models.). Use a vision model (for example "
        "gpt-4o-mini, qwen2.5vl or llava), or set RAG_LLM_VISION=false to send the image "
        "captions instead of the pixels."
    )
    assert len(server.chat_requests()) == 1  # no silent retry when vision was asked for
    _assert_key_hidden(info.value, caplog, KEY)


@pytest.mark.parametrize("streaming", [False, True])
def test_image_refused_falls_back_to_captions_and_says_so(hits, streaming):
    with StandIn(refuse_images=True) as server:
        engine = engine_for(server.url, hits)  # vision guessed from the name (auto)
        assert engine.vision is True
        if streaming:
            stream = engine.stream("When?")
            assert "".join(stream) == REPLY
            answer = stream.answer
        else:
            answer = engine.ask("When?")
    first, second = server.chat_requests()
    assert len(image_urls(first)) == 2 and image_urls(second) == []
    assert "Caption: The tower lit at night" in prompt_text(second)
    assert answer.answer == REPLY and answer.vision is False
    assert answer.notes == [
        "The model 'qwen2.5-vl-7b-instruct' refused the images (HTTP 400: Invalid content type. "
        "image_url is only supported by certain models.); answered again from the passages and "
        "image captions only. Set RAG_LLM_VISION=false to skip sending images."
    ]


def test_connection_refused(hits, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = engine_for(url, hits)
    started = time.monotonic()
    with pytest.raises(LLMConnectionError) as info:
        engine.ask("When?")
    assert time.monotonic() - started < 5
    assert str(info.value) == (
        f"Cannot connect to the LLM server at {url} (RAG_LLM=openai-like). "
        "Is it running? Start it, or set RAG_LLM_BASE_URL to its address."
    )
    _assert_key_hidden(info.value, caplog, KEY)


def test_connection_refused_ollama(hits):
    pytest.importorskip("llama_index.llms.ollama")
    url = f"http://127.0.0.1:{free_port()}"
    settings = Settings(llm="ollama", llm_base_url=url, llm_model="llava")
    with pytest.raises(LLMConnectionError) as info:
        RagQueryEngine.from_settings(settings, FakeRetriever(hits)).ask("When?")
    assert str(info.value) == (
        f"Cannot connect to the LLM server at {url} (RAG_LLM=ollama). "
        "Is it running? Start it, or set RAG_LLM_BASE_URL to its address."
    )


def test_timeout(hits, caplog):
    caplog.set_level(logging.DEBUG)
    with StandIn(delay=3.0) as server:
        engine = engine_for(server.url, hits, llm_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(LLMTimeoutError) as info:
            engine.ask("When?")
        assert time.monotonic() - started < 2.5
    assert str(info.value) == (
        f"The LLM server at {server.url} did not answer within 0.3 seconds. "
        "Raise RAG_LLM_TIMEOUT, or ask with fewer sources (--top-k, --image-top-k) "
        "or a smaller model."
    )
    _assert_key_hidden(info.value, caplog, KEY)


def test_server_error_body_is_redacted(hits, caplog):
    caplog.set_level(logging.DEBUG)
    with StandIn(fail=(500, f"internal error for key {KEY}")) as server:
        with pytest.raises(LLMServerError) as info:
            engine_for(server.url, hits).ask("When?")
    assert str(info.value) == (
        f"The LLM server at {server.url} answered HTTP 500: internal error for key ***"
    )
    _assert_key_hidden(info.value, caplog, KEY)


def test_key_inside_base_url_is_hidden(hits):
    url = f"http://user:{KEY}@127.0.0.1:{free_port()}/v1"
    with pytest.raises(LLMConnectionError) as info:
        engine_for(url, hits).ask("When?")
    assert KEY not in str(info.value)
    assert "at http://127.0.0.1:" in str(info.value)


@pytest.mark.parametrize(
    "backend,module,package,extra",
    [
        ("openai", "llama_index.llms.openai", "llama-index-llms-openai", "openai"),
        ("openai-like", "llama_index.llms.openai_like", "llama-index-llms-openai-like", "openai-like"),
        ("ollama", "llama_index.llms.ollama", "llama-index-llms-ollama", "ollama"),
    ],
)
def test_missing_package_names_the_extra(monkeypatch, backend, module, package, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    llms._openai_class.cache_clear()
    try:
        settings = Settings(llm=backend, llm_base_url="http://127.0.0.1:1/v1",
                                 llm_model="m", llm_api_key=KEY)
        with pytest.raises(MissingExtraError) as info:
            llms.make_llm(settings)
    finally:
        llms._openai_class.cache_clear()
    assert str(info.value) == (
        f"RAG_LLM={backend} needs the package {package}, which is not installed. "
        f"Install it with: pip install 'rag[{extra}]'"
    )


def test_openai_backend_defaults(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    llm = llms.make_llm(Settings(llm="openai"))
    assert llm.model == "gpt-4o-mini"
    assert KEY not in repr(llm)
    assert llm.metadata.is_chat_model
    newer = llms.make_llm(Settings(llm="openai", llm_model="gpt-9-omni"))
    assert newer.metadata.is_chat_model  # unknown names do not break the integration
