"""Fairness between clients: a share of the server per client address, and a deadline on bodies.

A plain ASGI middleware behind the guard (so refused requests never count):

- each client address may have `client_requests` API requests in flight at once (running or
  waiting for a slot, streams until they end); one more gets 429 with `Retry-After`, while
  other clients are served as before. Loopback clients are not counted: every process on this
  machine has the same address, so one share would throttle them all together; they share the
  global slots only.
- a request body must arrive within `body_seconds` of the request's start; a client that
  trickles its upload (slowloris) gets 408 and the connection is closed. Waiting for the body
  is asynchronous: other requests go on meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

from rag.server.config import ServerConfig, is_loopback

Scope = Dict[str, Any]
RETRY_AFTER_SECONDS = 1
COUNTED_PREFIX = "/api/"


class BodyTimeout(Exception):
    """The request body did not arrive in time."""


def client_key(scope: Scope) -> Optional[str]:
    """The address a request is counted under, or None for loopback clients (not counted)."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    return None if is_loopback(host) else host


def json_response(status: int, message: str, extra: Optional[List[Tuple[bytes, bytes]]] = None) -> List[Dict[str, Any]]:
    """The two ASGI messages of a small JSON error response."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [{"type": "http.response.start", "status": status, "headers": headers + (extra or [])},
            {"type": "http.response.body", "body": body}]


class ClientLimits:
    """Per-client concurrency (429) and the request-body deadline (408), in front of the app."""

    def __init__(self, app: Callable, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.in_flight: Counter = Counter()

    def over_share(self, scope: Scope) -> Optional[str]:
        """The key to count this request under, "" when it is not counted; None when refused."""
        if not scope.get("path", "").startswith(COUNTED_PREFIX) or not self.config.client_requests:
            return ""
        key = client_key(scope)
        if key is None:
            return ""
        if self.in_flight[key] >= self.config.client_requests:
            return None
        return key

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self.over_share(scope)
        if key is None:
            limit = self.config.client_requests
            for message in json_response(
                    429, f"too many requests from your address at once (the limit is {limit}); "
                    "wait for one to finish, then try again",
                    [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]):
                await send(message)
            return
        if key:
            self.in_flight[key] += 1
        try:
            await self._with_deadline(scope, receive, send)
        finally:
            if key:
                self.in_flight[key] -= 1
                if self.in_flight[key] <= 0:
                    del self.in_flight[key]

    async def _with_deadline(self, scope: Scope, receive: Callable, send: Callable) -> None:
        loop = asyncio.get_running_loop()
        seconds = self.config.body_seconds
        deadline = loop.time() + seconds
        body_done = False
        timed_out = False
        started = False

        async def timed_receive() -> Dict[str, Any]:
            nonlocal body_done, timed_out
            if body_done:  # later reads only wait for a disconnect (streams): no deadline
                return await receive()
            if timed_out:
                raise BodyTimeout()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                timed_out = True
                raise BodyTimeout() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Dict[str, Any]) -> None:
            nonlocal started
            if timed_out:  # whatever the app makes of the missing body, the answer is 408
                if not started:
                    started = True
                    await self._send_timeout(send, seconds)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:  # BodyTimeout, or whatever the app made of it
            if not timed_out:
                raise
        if timed_out and not started:
            await self._send_timeout(send, seconds)

    @staticmethod
    async def _send_timeout(send: Callable, seconds: float) -> None:
        message = (f"the request body did not arrive within {seconds:g} s; "
                   "send it faster or in a smaller request")
        for part in json_response(408, message, [(b"connection", b"close")]):
            await send(part)
