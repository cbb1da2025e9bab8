"""A misbehaving OpenAI-compatible chat server on 127.0.0.1, for the LLM fault tests.

`HostileLLM(mode)` answers every `POST .../chat/completions` the way `mode` says:

    ok        a normal short answer (streamed when asked), echoing the prompt when echo=True
    status    an error status with a JSON error body (status=..., message=...)
    html      200 with an HTML page instead of JSON
    badjson   200, Content-Type JSON, a body that is not JSON
    empty     200 with an empty body
    hang      reads the request and never answers (until the test ends)
    cut       streams a few chunks, then closes the connection without finishing
    huge      an answer of `size` characters (streamed: chunk after chunk, without end when size=0)

It records each request body in `requests`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _chunk(content: str, finish: Any = None) -> bytes:
    data = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]}
    return f"data: {json.dumps(data)}\n\n".encode()


def _completion(content: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


class HostileLLM:
    """The server (a context manager); `url` is its OpenAI-style base URL."""

    def __init__(self, mode: str = "ok", *, status: int = 500, message: str = "boom", size: int = 0,
                 echo: bool = False, reply: str = "A short answer [1].") -> None:
        self.mode, self.status, self.message, self.size, self.echo, self.reply = mode, status, message, size, echo, reply
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.release = threading.Event()
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                hostile.requests.append(body)
                hostile.headers.append(dict(self.headers))
                try:
                    hostile._answer(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _send(self, h: Any, status: int, body: bytes, kind: str = "application/json") -> None:
        h.send_response(status)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _text(self, body: dict) -> str:
        if not self.echo:
            return self.reply
        parts = []
        for message in body.get("messages", []):
            content = message.get("content")
            parts += [content] if isinstance(content, str) else [p.get("text", "") for p in content or []]
        return "\n".join(parts)

    def _answer(self, h: Any, body: dict) -> None:
        stream = bool(body.get("stream"))
        if self.mode == "status":
            return self._send(h, self.status, json.dumps({"error": {"message": self.message}}).encode())
        if self.mode == "html":
            return self._send(h, 200, b"<!doctype html><html><body>Welcome to nginx!</body></html>", "text/html")
        if self.mode == "badjson":
            return self._send(h, 200, b'{"id": "x", "choices": [ {"message": ')
        if self.mode == "empty":
            return self._send(h, 200, b"")
        if self.mode == "hang":
            self.release.wait(60)
            return
        if not stream:
            text = "x" * self.size if self.mode == "huge" else self._text(body)
            return self._send(h, 200, _completion(text))
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        if self.mode == "cut":
            for word in ("The", " answer", " is"):
                h.wfile.write(_chunk(word))
            h.wfile.flush()
            h.close_connection = True
            return
        if self.mode == "huge":
            sent = 0
            while not self.release.is_set() and (self.size == 0 or sent < self.size):
                h.wfile.write(_chunk("y" * 1000))
                sent += 1000
            h.wfile.write(_chunk("", "stop") + b"data: [DONE]\n\n")
            return
        h.wfile.write(_chunk(self._text(body)) + _chunk("", "stop") + b"data: [DONE]\n\n")

    def __enter__(self) -> "HostileLLM":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
