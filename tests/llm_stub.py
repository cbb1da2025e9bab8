"""A stand-in OpenAI-compatible chat server on 127.0.0.1, for running notebooks offline.

It answers `POST /v1/chat/completions` (plain and streaming) with a short reply that cites
the first passage and the first image of the prompt it received, so an answer rendered in
a notebook has real [n] links. It records every request for tests to inspect.

    python tests/llm_stub.py [--port 8765]     # prints the RAG_LLM_* exports, serves until Ctrl-C

In Python:

    with LLMStub() as stub:
        env = {"RAG_LLM": "openai-like", "RAG_LLM_BASE_URL": stub.url, ...}
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

STUB_MODEL = "stub-vl"  # "vl" in the name: the query engine guesses a vision model and sends images
STUB_KEY = "not-needed"


def _user_text(body: dict[str, Any]) -> tuple[str, int]:
    """(all text of the user messages, number of image parts)."""
    texts, images = [], 0
    for message in body.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                images += 1
    return "\n".join(texts), images


def make_reply(body: dict[str, Any]) -> str:
    """A deterministic answer citing the first passage and the first image in the prompt."""
    text, images = _user_text(body)
    passage = re.search(r"^\[(\d+)\] Passage from (.+)$", text, re.MULTILINE)
    image = re.search(r"^\[(\d+)\] Image from (.+)$", text, re.MULTILINE)
    question = re.search(r"^Question: (.+)$", text, re.MULTILINE)
    sentences = [f"This is a stand-in answer to {question.group(1).strip()!r}." if question else "This is a stand-in answer."]
    if passage:
        sentences.append(f"The passage from {passage.group(2)} is the closest text [{passage.group(1)}].")
    if image:
        sentences.append(f"The image from {image.group(2)} looks related [{image.group(1)}].")
    sentences.append(f"(It received {images} image parts.)")
    return " ".join(sentences)


class LLMStub:
    """The server, on a free port unless one is given; use as a context manager."""

    def __init__(self, port: int = 0, reply: Optional[str] = None) -> None:
        self.fixed_reply = reply
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, data: Any) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    return self._json(200, {"object": "list", "data": [{"id": STUB_MODEL, "object": "model"}]})
                self._json(404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                stub.requests.append({"path": self.path, "json": body})
                if not self.path.endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": "no such route"}})
                try:
                    stub._answer(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def env(self) -> dict[str, str]:
        """The RAG_LLM_* variables that point the query engine at this server."""
        return {"RAG_LLM": "openai-like", "RAG_LLM_BASE_URL": self.url, "RAG_LLM_MODEL": STUB_MODEL,
                "RAG_LLM_API_KEY": STUB_KEY, "RAG_LLM_VISION": "true", "RAG_LLM_MAX_RETRIES": "0",
                "RAG_LLM_TIMEOUT": "30"}

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def _answer(self, h: Any, body: dict[str, Any]) -> None:
        reply = self.fixed_reply or make_reply(body)
        model = body.get("model", STUB_MODEL)
        head = {"id": "chatcmpl-stub", "created": 0, "model": model}
        if not body.get("stream"):
            return h._json(200, {**head, "object": "chat.completion",
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": reply}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        words = reply.split(" ")
        for i, word in enumerate(words):
            delta: dict[str, Any] = {"content": word + (" " if i < len(words) - 1 else "")}
            if i == 0:
                delta["role"] = "assistant"
            chunk = {**head, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            h.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last = {**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        h.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        h.wfile.flush()

    def start(self) -> "LLMStub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "LLMStub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    stub = LLMStub(args.port).start()
    print(" ".join(f"{k}={v}" for k, v in stub.env().items()).join(["export ", ""]), flush=True)
    try:
        stub.thread.join()
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
