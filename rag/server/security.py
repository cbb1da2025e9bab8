"""The guard in front of every request: host, token, origin, body size and response headers.

A plain ASGI middleware (it never buffers a response, so streams pass through as they are).
"""

from __future__ import annotations

import hmac
import json
import logging
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional

from rag.server.config import ServerConfig, is_loopback

TOKEN_COOKIE = "rag_token"
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/", "/docs", "/openapi.json", "/favicon.ico")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
]

Scope = Dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def redact(text: str, secrets: Iterable[Optional[str]]) -> str:
    """`text` with every secret (token, API keys) replaced by `***`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """A log filter that removes secrets from every message it passes."""

    def __init__(self, secrets: Iterable[Optional[str]]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = redact(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, ()
        return True


def _headers(scope: Scope) -> Dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _host_name(host_header: str) -> str:
    """`[::1]:8765` -> `::1`, `localhost:80` -> `localhost`."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def presented_token(headers: Dict[str, str]) -> Optional[str]:
    """The token a request carries: `Authorization: Bearer ...` or the `rag_token` cookie."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    cookie = headers.get("cookie")
    if cookie:
        try:
            jar = SimpleCookie()
            jar.load(cookie)
        except Exception:  # a malformed cookie header is just no token
            return None
        if TOKEN_COOKIE in jar:
            return jar[TOKEN_COOKIE].value
    return None


class Guard:
    """Checks each request before the app sees it, and adds security headers to each response."""

    def __init__(self, app: ASGIApp, config: ServerConfig, token: Optional[str]) -> None:
        self.app = app
        self.config = config
        self.token = token

    async def _refuse(self, send: Callable, status: int, message: str, extra: Optional[List] = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or []) + SECURITY_HEADERS})
        await send({"type": "http.response.body", "body": body})

    def check(self, scope: Scope) -> Optional[tuple]:
        """(status, message, extra headers) when the request must be refused, else None."""
        headers = _headers(scope)
        path = scope.get("path", "")
        host = _host_name(headers.get("host", ""))
        if self.config.loopback and not is_loopback(host) and host != self.config.host:
            # DNS rebinding: a page on another site that resolves its name to 127.0.0.1.
            return 421, f"this server answers only to its loopback address, not to host {host[:100]!r}", None
        method = scope.get("method", "GET")
        origin = headers.get("origin")
        if origin and method not in ("GET", "HEAD", "OPTIONS"):
            own = {f"http://{headers.get('host', '')}", f"https://{headers.get('host', '')}"}
            if origin not in own and origin not in self.config.cors_origins:
                return 403, "cross-origin requests are not allowed (CORS is off)", None
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if self.token and not public:
            given = presented_token(headers)
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                return (401, "this server needs a token: send 'Authorization: Bearer <token>' "
                        "(the token is RAG_SERVER_TOKEN or the server's token file)",
                        [(b"www-authenticate", b"Bearer")])
        if method in ("POST", "PUT", "PATCH"):
            length = headers.get("content-length")
            if length is None and headers.get("transfer-encoding"):
                return 411, "send a Content-Length header (chunked request bodies are not accepted)", None
            try:
                size = int(length or 0)
            except ValueError:
                return 400, "the Content-Length header is not a number", None
            if size > self.config.max_body_bytes:
                return 413, (f"the request body has {size:,} bytes; the limit is "
                             f"{self.config.max_body_bytes:,}"), None
        return None

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.check(scope)
        if refused is not None:
            status, message, extra = refused
            await self._refuse(send, status, message, extra)
            return
        limit = self.config.max_body_bytes
        seen = 0

        async def limited_receive() -> Dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # more bytes than Content-Length promised
                    return {"type": "http.disconnect"}
            return message

        async def send_with_headers(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)
