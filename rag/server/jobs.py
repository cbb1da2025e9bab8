"""Ingest inside the server: one at a time, in a worker thread, with progress as events.

Searches go on while it runs (the store takes writes under its own lock; reads do not wait).
A stop request (SIGTERM, Ctrl-C) ends the run after the commit group being written, so the
ledger and both collections stay consistent; the next ingest picks up where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Tuple

from rag.errors import RagError
from rag.index.ingest import Ingestor
from rag.types import IngestReport

OUTSIDE = "outside the folders this server may ingest"


def sse(event: str, data: Any) -> bytes:
    """One server-sent event."""
    payload = json.dumps(data, ensure_ascii=False, default=str)
    return f"event: {event}\ndata: {payload}\n\n".encode()


def under(path: Path, roots: Sequence[Path]) -> bool:
    """Is the resolved `path` one of `roots` or inside one?"""
    return any(path == root or root in path.parents for root in roots)


def check_ingest_paths(raw: Sequence[str], roots: Sequence[Path]) -> List[Path]:
    """Resolved paths, each an existing folder or file under an allowed root; else RagError."""
    if not roots:
        raise RagError("this server does not ingest: start it with --allow-ingest DIR "
                       "(or RAG_SERVER_ALLOW_INGEST) to let clients index folders under DIR")
    if not raw:
        raise RagError("give at least one path to ingest")
    allowed = ", ".join(str(r) for r in roots)
    out = []
    for item in raw:
        if not isinstance(item, str) or not item or "\x00" in item:
            raise RagError("each path must be a non-empty string")
        path = Path(item)
        if not path.is_absolute():
            raise RagError(f"{item}: give an absolute path (the server does not know your working directory)")
        resolved = path.resolve()
        if not under(resolved, roots):
            raise RagError(f"{item}: {OUTSIDE} ({allowed})")
        if not resolved.exists():
            raise RagError(f"{item}: no such file or folder")
        out.append(resolved)
    return out


class IngestStopped(Exception):
    """The server is shutting down: stop after the commit group just written."""


class _Bar:
    """Stands in for tqdm: reports progress as events instead of drawing a bar."""

    def __init__(self, job: "IngestJob", total: int, desc: str) -> None:
        self.job, self.total, self.desc, self.done = job, total, desc, 0

    def __enter__(self) -> "_Bar":
        if self.total:
            self.job.emit("progress", {"stage": self.desc, "done": 0, "total": self.total})
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.done += n
        self.job.emit("progress", {"stage": self.desc, "done": self.done, "total": self.total})


class _ServerIngestor(Ingestor):
    def __init__(self, index: Any, job: "IngestJob") -> None:
        super().__init__(index, progress=False)
        self.job = job

    def bar(self, total: int, desc: str) -> Any:
        return _Bar(self.job, total, desc)

    def plan(self, paths: Sequence[Path]) -> List[Any]:
        pending = super().plan(paths)
        kept = []
        for item in pending:  # a symlink inside an allowed folder may point anywhere
            if under(Path(item.source.path).resolve(), self.job.roots):
                kept.append(item)
            else:
                self.skip(item.source.path, OUTSIDE)
        self.job.emit("plan", {"files": len(kept), "unchanged": self.report.unchanged,
                               "skipped": len(self.report.skipped)})
        return kept

    def commit(self, items: List[Any]) -> None:
        super().commit(items)
        if self.job.stop.is_set():
            raise IngestStopped()


class IngestJob:
    """One ingest run; its events go to the asyncio loop that started it."""

    def __init__(self, service: Any, paths: List[Path], prune: bool, roots: Sequence[Path],
                 stop: threading.Event, loop: asyncio.AbstractEventLoop) -> None:
        self.service, self.paths, self.prune, self.roots = service, paths, prune, list(roots)
        self.stop, self.loop = stop, loop
        self.queue: "asyncio.Queue[Tuple[str, Any]]" = asyncio.Queue()
        self.report: Optional[IngestReport] = None
        self.started = time.time()

    def emit(self, event: str, data: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (event, data))
        except RuntimeError:  # the loop is closed: nobody listens any more
            pass

    def run(self) -> None:
        """The worker thread's body: ingest, then a `report` (or `error`) event and `None`."""
        ingestor = _ServerIngestor(self.service.index, self)
        try:
            self.report = ingestor.run(self.paths, prune=self.prune)
            self.emit("report", self.report.to_dict())
        except IngestStopped:
            report = ingestor.report
            report.points = self.service.index.counts()
            self.report = report
            self.emit("report", {**report.to_dict(), "stopped": True})
        except RagError as exc:
            self.emit("error", {"error": str(exc)})
        except Exception as exc:  # reported, never a traceback in the response
            self.emit("error", {"error": f"ingest failed: {type(exc).__name__}: {exc}"})
        finally:
            self.emit("end", None)

    async def events(self) -> AsyncIterator[bytes]:
        yield sse("start", {"paths": [str(p) for p in self.paths], "prune": self.prune})
        while True:
            event, data = await self.queue.get()
            if event == "end":
                return
            yield sse(event, data)


class IngestRunner:
    """Lets one ingest run at a time and stops it cleanly on shutdown."""

    def __init__(self, service: Any, roots: Sequence[Path]) -> None:
        self.service = service
        self.roots = list(roots)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.current: Optional[IngestJob] = None
        self.thread: Optional[threading.Thread] = None

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, paths: List[Path], prune: bool) -> IngestJob:
        """Start a run in a thread; RagError when one is already running or the server stops."""
        with self._lock:
            if self.stop.is_set():
                raise RagError("the server is shutting down")
            if self.busy:
                raise RagError("busy: an ingest is already running; try again when it has finished")
            job = IngestJob(self.service, paths, prune, self.roots, self.stop, asyncio.get_running_loop())
            self.current = job
            self.thread = threading.Thread(target=job.run, name="rag-ingest", daemon=True)
            self.thread.start()
            return job

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Ask a running ingest to stop after its current commit group, and wait for it."""
        self.stop.set()
        thread = self.thread
        if thread is not None:
            thread.join(timeout)
