"""Shared by the server tests: an in-process app over a small index, and a real uvicorn thread."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from rag.server.config import ServerConfig


def make_service(settings, shared_embeddings, llm: Any = None):
    from rag.index.core import RagIndex
    from rag.service import RagService

    index = RagIndex(settings, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"])
    return RagService(settings, index=index, llm=llm)


class LiveServer:
    """`rag.server.run.serve` in a thread on a free loopback port (as `rag serve` runs it)."""

    def __init__(self, settings, service, config: Optional[ServerConfig] = None) -> None:
        self.settings, self.service = settings, service
        self.config = replace(config or ServerConfig(), port=0)
        self.advert: Optional[dict] = None
        self.error: Optional[BaseException] = None
        self.messages: list = []
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.uvicorn: Any = None

    def _run(self) -> None:
        import uvicorn

        from rag.server import run

        original = uvicorn.Server.run
        live = self

        def capture(server, *args, **kwargs):  # keep a handle to stop it from the test
            # A server started while another LiveServer runs calls through that one's capture
            # too: only the first handle is this server's.
            if live.uvicorn is None:
                live.uvicorn = server
            return original(server, *args, **kwargs)

        uvicorn.Server.run = capture
        try:
            run.serve(self.settings, self.config, service=self.service, log_level="warning",
                      echo=self.messages.append, on_ready=self._on_ready)
        except BaseException as exc:  # reported to the test
            self.error = exc
            self._ready.set()
        finally:
            uvicorn.Server.run = original

    def _on_ready(self, advert: dict) -> None:
        self.advert = advert
        self._ready.set()

    @property
    def url(self) -> str:
        assert self.advert is not None
        return self.advert["url"]

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        assert self._ready.wait(60), "the server did not start"
        if self.error is not None:
            raise self.error
        deadline = time.time() + 30
        while (self.uvicorn is None or not self.uvicorn.started) and time.time() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
        self.thread.join(60)

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_for(predicate, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def sse_events(text: str) -> list:
    from rag.client import parse_sse

    return list(parse_sse(text.splitlines()))


def png_bytes(size=(32, 32), color=(200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def photo_bytes(name: str) -> bytes:
    from conftest import photo

    return Path(photo(name)).read_bytes()
