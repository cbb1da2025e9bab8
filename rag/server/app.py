"""The FastAPI app: the page, the JSON API and the event streams over one `RagService`.

Every error body is `{"error": "<message>"}` with secrets removed; searches, answers and the
ingest each have their own concurrency slots, and each client address its share of them
(rag/server/limits.py), so one client cannot starve the others. Clients on other machines
never see the server's file paths (rag/server/public.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag import __version__
from rag.errors import RagError
from rag.server.config import ServerConfig
from rag.server.docs import render_docs
from rag.server.jobs import IngestRunner, check_ingest_paths, sse
from rag.server.limits import RETRY_AFTER_SECONDS, ClientLimits
from rag.server.media import MediaNotFound, image_file, render
from rag.server.public import is_local_peer, public_hit, public_info, public_search, scrub_answer
from rag.server.security import Guard, redact
from rag.server.uploads import UploadRejected, check_image, read_capped, temporary_image
from rag.types import AskRequest, SearchRequest

logger = logging.getLogger("rag.server")
STATIC = Path(__file__).parent / "static"
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class ApiError(Exception):
    """An error with an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


class Slots:
    """At most `size` jobs at once; a request waits `queue_seconds` for a slot, then gets 503."""

    def __init__(self, size: int, queue_seconds: float, what: str) -> None:
        self.sem = asyncio.Semaphore(size)
        self.queue_seconds = queue_seconds
        self.what = what

    async def acquire(self) -> None:
        try:
            await asyncio.wait_for(self.sem.acquire(), self.queue_seconds)
        except asyncio.TimeoutError:
            raise ApiError(503, f"busy: too many {self.what} are running; try again in a moment",
                           {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None

    def release(self) -> None:
        self.sem.release()


class State:
    """What the routes share: the service, the limits, the worker threads and the ingest runner."""

    def __init__(self, service: Any, config: ServerConfig, token: Optional[str]) -> None:
        self.service = service
        self.config = config
        self.token = token
        self.pool = ThreadPoolExecutor(max_workers=config.max_searches + config.max_asks + 2,
                                       thread_name_prefix="rag-worker")
        self.ingest = IngestRunner(service, config.allow_ingest)
        self._slots: Dict[str, Slots] = {}
        self.secrets: List[str] = [s for s in (token, service.settings.llm_api_key,
                                               service.settings.qdrant_api_key) if s]
        self._llm: Optional[Dict[str, Any]] = None
        self._lock = threading.Lock()

    def slots(self, name: str) -> Slots:
        """Created lazily: asyncio primitives belong to the loop that serves the requests."""
        if name not in self._slots:
            size = self.config.max_searches if name == "searches" else self.config.max_asks
            self._slots[name] = Slots(size, self.config.queue_seconds, name)
        return self._slots[name]

    def llm(self) -> Dict[str, Any]:
        """The LLM as the page may show it: backend, model, display URL, vision (never a key)."""
        if self._llm is None:
            with self._lock:
                try:
                    engine = self.service.query_engine()
                    spec = engine.spec
                    self.secrets.extend(s for s in getattr(spec, "secrets", []) if s)
                    self._llm = {**spec.to_dict(), "configured": engine.llm is not None}
                except RagError as exc:
                    self._llm = {"backend": None, "configured": False, "error": self.clean(str(exc))}
        return self._llm

    def clean(self, text: str) -> str:
        return redact(text, self.secrets)

    async def run(self, fn: Callable[[], Any], slots: str, seconds: Optional[float] = None) -> Any:
        """Run `fn` in a worker thread inside a slot, answering 503 (busy) or 504 (too slow)."""
        slot = self.slots(slots)
        await slot.acquire()
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn)
        future.add_done_callback(lambda _f: slot.release())  # a timed-out job keeps its slot until it ends
        try:
            return await asyncio.wait_for(asyncio.shield(future), seconds or self.config.search_seconds)
        except asyncio.TimeoutError:
            what = {"searches": "search", "asks": "answer"}.get(slots, slots)
            raise ApiError(504, f"the {what} took longer than {seconds or self.config.search_seconds:g} s") from None


def _int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(422, f"{name} must be an integer, got {str(value)[:40]!r}") from None
    if not low <= number <= high:
        raise ApiError(422, f"{name} must be between {low} and {high}, got {number}")
    return number


def _filters(raw_json: Optional[str], pairs: List[str]) -> Dict[str, Any]:
    """Filters from a JSON object and/or KEY=VALUE pairs; values must be plain scalars."""
    out: Dict[str, Any] = {}
    if raw_json:
        try:
            data = json.loads(raw_json)
        except json.JSONDecodeError:
            raise ApiError(422, "filters must be a JSON object such as {\"title\": \"Moon\"}") from None
        if not isinstance(data, dict):
            raise ApiError(422, "filters must be a JSON object such as {\"title\": \"Moon\"}")
        out.update(data)
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiError(422, f"{item[:60]!r} is not KEY=VALUE")
        out[key] = value
    for key, value in out.items():
        if not isinstance(value, (str, int, float, bool)) or len(str(key)) > 100:
            raise ApiError(422, f"filter {str(key)[:60]!r}: values must be strings, numbers or booleans")
    return out


def _query_text(text: Optional[str], config: ServerConfig) -> str:
    text = text or ""
    if len(text) > config.max_query_chars:
        raise ApiError(413, f"the query has {len(text):,} characters; the limit is {config.max_query_chars:,}")
    return text


async def _upload(state: State, image: Optional[UploadFile]) -> Optional[tuple]:
    """(bytes, extension, display name) of a checked upload, or None when no file was sent."""
    if image is None or (not image.filename and not image.size):
        return None
    data = await read_capped(image, state.config.max_upload_bytes)
    if not data:
        return None
    extension = check_image(data, image.filename, state.config.max_upload_pixels)
    return data, extension, Path(image.filename or "image").name


def create_app(service: Any, config: Optional[ServerConfig] = None, token: Optional[str] = None) -> FastAPI:
    """The app over `service`. `token`: what clients must send (None: no token needed)."""
    config = config or ServerConfig()
    state = State(service, config, token)
    app = FastAPI(title="rag", version=__version__, docs_url=None, redoc_url=None,
                  description="Multimodal search and question answering over an index of passages and images.")
    app.state.rag = state

    # -- errors -------------------------------------------------------------------------
    def error(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
        return JSONResponse({"error": state.clean(message)}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, str(exc), exc.headers)

    @app.exception_handler(UploadRejected)
    async def _upload_error(_request: Request, exc: UploadRejected) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(RagError)
    async def _rag_error(_request: Request, exc: RagError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        return error(422, f"{where or 'request'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error: %s", state.clean(f"{type(exc).__name__}: {exc}"))
        return error(500, "internal error (the server log has the details)")

    # -- page and docs --------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(render_docs(app.openapi()))

    # -- API ------------------------------------------------------------------------------
    @app.get("/api/info", summary="Collections, point counts, models and storage")
    async def info(http: Request) -> Dict[str, Any]:
        """What `RagService.info()` returns, plus `server`: version, LLM, limits, ingest state."""
        data = await state.run(service.info, "searches")
        if not is_local_peer(http.scope):
            data = public_info(data)
        data["server"] = {
            "version": __version__,
            "token_required": bool(token),
            "llm": await asyncio.get_running_loop().run_in_executor(state.pool, state.llm),
            "ingest": {"allowed": [str(p) for p in config.allow_ingest], "running": state.ingest.busy},
            "limits": {"max_upload_bytes": config.max_upload_bytes, "max_upload_pixels": config.max_upload_pixels,
                       "max_query_chars": config.max_query_chars, "max_top_k": config.max_top_k},
        }
        return data

    async def do_search(http: Request, q: str, top_k: Any, image_top_k: Any, filters: Dict[str, Any],
                        upload: Optional[tuple]) -> Dict[str, Any]:
        request = SearchRequest(query=_query_text(q, config), top_k=_int(top_k, "top_k", 0, config.max_top_k),
                                image_top_k=_int(image_top_k, "image_top_k", 0, config.max_top_k), filters=filters)
        if upload is None:
            result = await state.run(lambda: service.search(request), "searches")
        else:
            def with_image() -> Any:
                with temporary_image(upload[0], upload[1]) as path:
                    request.image = str(path)
                    return service.search(request)

            result = await state.run(with_image, "searches")
        data = result.to_dict()
        return data if is_local_peer(http.scope) else public_search(data)

    @app.get("/api/search", summary="Search by text")
    async def search_get(http: Request, q: str = Query("", description="the query text"),
                         top_k: int = Query(5, description="passages to return"),
                         image_top_k: int = Query(3, description="images to return"),
                         filter: List[str] = Query([], description="KEY=VALUE metadata filters (repeatable)"),
                         ) -> Dict[str, Any]:
        """`{"hits": [...]}`, each hit as `rag search --json` prints it."""
        return await do_search(http, q, top_k, image_top_k, _filters(None, filter), None)

    @app.post("/api/search", summary="Search by text, image or both (multipart form)")
    async def search_post(http: Request, q: str = Form(""), top_k: int = Form(5), image_top_k: int = Form(3),
                          filters: Optional[str] = Form(None, description="a JSON object of metadata filters"),
                          filter: List[str] = Form([]),
                          image: Optional[UploadFile] = File(None, description="a query image")) -> Dict[str, Any]:
        """Like GET, plus an uploaded `image` (checked like ingested files) and JSON `filters`."""
        upload = await _upload(state, image)
        return await do_search(http, q, top_k, image_top_k, _filters(filters, filter), upload)

    @app.post("/api/ask", summary="Answer a question, streamed as server-sent events",
              openapi_extra={"requestBody": {"content": {
                  "application/json": {"schema": {"type": "object", "properties": {
                      "question": {"type": "string"}, "top_k": {"type": "integer"},
                      "image_top_k": {"type": "integer"}, "filters": {"type": "object"}}}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "question": {"type": "string"}, "image": {"type": "string", "format": "binary"},
                      "filters": {"type": "string"}}}}}}})
    async def ask(request: Request) -> StreamingResponse:
        """Events: `sources` (numbered sources), `delta` (answer text as it arrives), then `answer`
        (the whole answer with sources and citations; without an LLM, the prompt that would be
        sent) or `error`."""
        upload = None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=20)
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            image = form.get("image")
            upload = await _upload(state, image if not isinstance(image, str) else None)
            filters = _filters(fields.get("filters"), [v for k, v in form.multi_items() if k == "filter" and isinstance(v, str)])
        else:
            try:
                fields = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ApiError(422, "send a JSON object such as {\"question\": \"...\"} or a multipart form") from None
            if not isinstance(fields, dict):
                raise ApiError(422, "send a JSON object such as {\"question\": \"...\"}")
            raw = fields.get("filters") or {}
            if not isinstance(raw, dict):
                raise ApiError(422, "filters must be a JSON object such as {\"title\": \"Moon\"}")
            filters = _filters(json.dumps(raw), [])
        question = fields.get("question", "")
        if not isinstance(question, str):
            raise ApiError(422, "question must be a string")
        req = AskRequest(question=_query_text(question, config),
                         top_k=_int(fields.get("top_k", 5), "top_k", 0, config.max_top_k),
                         image_top_k=_int(fields.get("image_top_k", 3), "image_top_k", 0, config.max_top_k),
                         filters=filters, dry_run=str(fields.get("dry_run", "")).lower() in ("1", "true"))
        return await start_answer(req, upload, is_local_peer(request.scope))

    async def start_answer(req: AskRequest, upload: Optional[tuple], local: bool) -> StreamingResponse:
        slot = state.slots("asks")
        await slot.acquire()
        holder = None
        try:
            if upload is not None:
                holder = temporary_image(upload[0], upload[1])
                req.image = str(holder.__enter__())
            loop = asyncio.get_running_loop()
            stream = await asyncio.wait_for(loop.run_in_executor(state.pool, lambda: service.stream(req)),
                                            config.search_seconds)
        except asyncio.TimeoutError:
            _finish(slot, holder)
            raise ApiError(504, f"finding sources took longer than {config.search_seconds:g} s") from None
        except BaseException:
            _finish(slot, holder)
            raise
        shown = (req.image, upload[2]) if upload else None  # (temporary path, the name the client gave)
        return StreamingResponse(answer_events(stream, slot, holder, shown, local),
                                 media_type="text/event-stream", headers=SSE_HEADERS)

    def _finish(slot: Slots, holder: Any) -> None:
        slot.release()
        if holder is not None:
            holder.__exit__(None, None, None)

    async def answer_events(stream: Any, slot: Slots, holder: Any, shown: Optional[tuple],
                            local: bool) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: "asyncio.Queue[tuple]" = asyncio.Queue()
        gone = threading.Event()  # the client went away: stop reading the LLM

        def put(item: tuple) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop has closed
                pass

        def pump() -> None:  # in a worker thread: the LLM's deltas, then the answer
            try:
                for delta in stream:
                    if gone.is_set():
                        return
                    put(("delta", delta))
                put(("answer", stream.get_answer()))
            except RagError as exc:
                put(("error", str(exc)))
            except Exception as exc:
                logger.error("answer failed: %s", state.clean(f"{type(exc).__name__}: {exc}"))
                put(("error", "the answer failed (the server log has the details)"))
            finally:
                put(("end", None))
                try:  # asyncio's semaphore belongs to the loop's thread
                    loop.call_soon_threadsafe(_finish, slot, holder)
                except RuntimeError:
                    if holder is not None:
                        holder.__exit__(None, None, None)

        pumping = False
        try:
            sources = [s.to_dict() for s in stream.sources]
            yield sse("sources", {"sources": sources if local else [public_hit(s) for s in sources]})
            loop.run_in_executor(state.pool, pump)
            pumping = True
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    return
                if kind == "delta":
                    yield sse("delta", {"text": value})
                elif kind == "answer":
                    data = scrub_answer(value.to_dict(), local, shown)
                    data["image"] = shown[1] if shown else None
                    yield sse("answer", data)
                else:
                    yield sse("error", {"error": state.clean(value)})
        finally:
            gone.set()
            if not pumping:
                _finish(slot, holder)

    @app.post("/api/ingest", summary="Index folders the server allows, streamed as server-sent events")
    async def ingest(request: Request) -> StreamingResponse:
        """JSON `{"paths": ["/abs/folder", ...], "prune": false}`. Events: `start`, `plan`, `progress`
        (stage, done, total), then `report` (the IngestReport, bad files with reasons) or `error`."""
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(422, "send a JSON object such as {\"paths\": [\"/data/articles\"]}") from None
        if not isinstance(body, dict) or not isinstance(body.get("paths"), list):
            raise ApiError(422, "send a JSON object such as {\"paths\": [\"/data/articles\"]}")
        paths = check_ingest_paths(body["paths"], config.allow_ingest)
        job = state.ingest.start(paths, bool(body.get("prune", False)))
        return StreamingResponse(job.events(), media_type="text/event-stream", headers=SSE_HEADERS)

    @app.get("/api/media/{node_id}", summary="An indexed image by node id",
             responses={200: {"content": {"image/jpeg": {}}}})
    async def media(node_id: str, size: Optional[int] = Query(None, description="thumbnail: at most this many px a side")) -> Response:
        """The image file of an indexed image node, or a JPEG thumbnail (`size` in 64..1024)."""
        if size is not None and not 16 <= size <= max(config.thumbnail_sizes):
            raise ApiError(422, f"size must be between 16 and {max(config.thumbnail_sizes)}, got {size}")
        if size is not None:  # round up to a cached size: few variants per image
            size = min((s for s in config.thumbnail_sizes if s >= size), default=max(config.thumbnail_sizes))

        def load() -> tuple:
            path = image_file(service.index, node_id)
            return render(path, size, service.settings.max_image_pixels)

        try:
            data, mime = await state.run(load, "searches")
        except MediaNotFound:
            raise ApiError(404, "no indexed image has this id") from None
        return Response(data, media_type=mime, headers={"Cache-Control": "private, max-age=3600"})

    app.add_middleware(ClientLimits, config=config)  # behind the guard: refused requests never count
    app.add_middleware(Guard, config=config, token=token)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    app.state.shutdown = state.ingest.shutdown
    return app
