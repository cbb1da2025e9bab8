"""`RagClient`: the `RagService` API over HTTP, to a running `rag serve`.

Same methods, same return values (`SearchResult`, `Answer`, `AnswerStream`-like, `IngestReport`,
the info dict); errors the server reports are raised as `RagError` with its message. Query
images are uploaded (the server never reads a path a client names); ingest paths are sent
absolute and must lie under a folder the server allows.

    from rag import RagService
    rag = RagService()            # talks to the server (through a RagClient) when one owns the storage

Discovery: `rag serve` writes `<storage>/server.json` (URL, pid) and, when a token is required,
a private token file; `connect(storage)` reads them and returns a client, or None.
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from rag.errors import RagError
from rag.types import Answer, AskRequest, Hit, IngestReport, SearchRequest, SearchResult, as_request

PathLike = Union[str, Path]

SERVER_FILE = "server.json"  # written by `rag serve` into the storage folder it owns
TOKEN_FILE = "server.token"  # the access token (mode 0600) when the server requires one
MEDIA_PATH = "/api/media/"  # a server on another machine names images by these URLs, not paths


def absolute_media(hits: Iterable[Hit], base_url: str) -> None:
    """Make the media URLs a remote server gives instead of image paths absolute (in place)."""
    for hit in hits:
        if hit.image_path and hit.image_path.startswith(MEDIA_PATH):
            hit.image_path = base_url.rstrip("/") + hit.image_path


def parse_sse(lines: Iterable[str]) -> Iterator[Tuple[str, Any]]:
    """(event, data) pairs from the lines of a server-sent event stream (data is JSON)."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield event, json.loads("\n".join(data))


class ClientAnswerStream:
    """Text deltas as the server streams them; `.answer` (an `Answer`) once consumed."""

    def __init__(self, events: Iterator[Tuple[str, Any]], close: Any, base_url: str = "") -> None:
        self._events = events
        self._close = close
        self._base_url = base_url
        self.sources: List[Any] = []
        self.answer: Any = None
        self._pending: Optional[Tuple[str, Any]] = None
        for event, data in self._events:  # the sources come first, before any text
            if event == "sources":
                self.sources = [Hit.from_dict(h) for h in data.get("sources", [])]
                absolute_media(self.sources, self._base_url)
                break
            self._pending = (event, data)
            break

    def __iter__(self) -> Iterator[str]:
        events = self._events
        if self._pending is not None:
            first, self._pending = self._pending, None
            events = iter([first, *events])
        try:
            for event, data in events:
                if event == "delta":
                    yield data["text"]
                elif event == "answer":
                    self.answer = Answer.from_dict(data)
                    absolute_media([*self.answer.sources, *self.answer.cited], self._base_url)
                    for part in self.answer.prompt_parts:
                        if str(part.get("image", "")).startswith(MEDIA_PATH):
                            part["image"] = self._base_url.rstrip("/") + part["image"]
                elif event == "error":
                    raise RagError(data.get("error", "the answer failed"))
        finally:
            self._close()
        if self.answer is None:
            raise RagError("the server closed the answer stream before the answer was complete")

    def get_answer(self) -> Any:
        """Consume what is left and return the Answer."""
        if self.answer is None:
            for _ in self:
                pass
        return self.answer


RETRY_STATUSES = (429, 503)  # the server is busy, or this client is over its share: try again
MAX_RETRY_WAIT = 5.0


def retry_wait(status: int, retry_after: Optional[str], attempt: int, retries: int) -> Optional[float]:
    """Seconds to wait before trying a refused request again, or None to give up (pure).

    A 429 or 503 is tried again `retries` times, after the server's `Retry-After` seconds
    (1 s when absent or unreadable, at most `MAX_RETRY_WAIT`).
    """
    if status not in RETRY_STATUSES or attempt >= retries:
        return None
    try:
        seconds = float(retry_after) if retry_after is not None else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_WAIT)


class RagClient:
    """search/ask/stream/ingest/info/close against the server at `url`.

    A request the server refuses as busy (503) or over this client's share (429) is tried
    again up to `retries` times, waiting as its `Retry-After` says.
    """

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 120.0, retries: int = 2,
                 sleep: Any = None) -> None:
        import httpx

        self.retries = retries
        self._sleep = sleep or time.sleep
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Certificates are loaded only for an https URL: that costs 40 ms per client (measured
        # here), which a plain-http server (the loopback default) would pay for nothing.
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0),
                                  trust_env=False, verify=self.url.lower().startswith("https://"))

    # -- plumbing ---------------------------------------------------------------------------
    def _fail(self, response: Any) -> None:
        try:
            message = response.json().get("error")
        except (ValueError, AttributeError):
            message = None
        raise RagError(f"{message or response.reason_phrase} (HTTP {response.status_code} from {self.url})")

    def _open(self, opener: Any) -> Tuple[Any, Any]:
        """(response, close) from `opener()`, tried again while the server answers 429/503 (as
        `retry_wait` says); an error status becomes a `RagError` with the server's message."""
        import httpx

        attempt = 0
        while True:
            try:
                response, close = opener()
            except httpx.HTTPError as exc:
                raise RagError(f"cannot reach the rag server at {self.url} ({exc}); is `rag serve` still running?") from None
            wait = retry_wait(response.status_code, response.headers.get("Retry-After"), attempt, self.retries)
            if wait is None:
                break
            response.read()
            close()
            attempt += 1
            self._sleep(wait)
        if response.status_code >= 400:
            response.read()
            close()
            self._fail(response)
        return response, close

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        response, _ = self._open(lambda: (self._http.request(method, path, **kwargs), lambda: None))
        return response

    def _events(self, method: str, path: str, **kwargs: Any) -> Tuple[Iterator[Tuple[str, Any]], Any]:
        def opener() -> Tuple[Any, Any]:
            context = self._http.stream(method, path, **kwargs)
            return context.__enter__(), lambda: context.__exit__(None, None, None)

        response, close = self._open(opener)
        return parse_sse(response.iter_lines()), close

    @staticmethod
    def _form(query: Dict[str, Any]) -> Dict[str, Any]:
        return {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in query.items() if v is not None}

    @staticmethod
    def _file(image: Optional[str]) -> Optional[Dict[str, Any]]:
        if image is None:
            return None
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RagError(f"{image}: no such image file ({exc.strerror or exc})") from None
        return {"image": (path.name, data, mimetypes.guess_type(path.name)[0] or "application/octet-stream")}

    # -- the API ------------------------------------------------------------------------------
    def search(self, request: Union[SearchRequest, str, None] = None, **options: Any) -> SearchResult:
        """Passages and images for a text and/or image query (as `RagService.search`)."""
        req = as_request(SearchRequest, request, "query", options)
        if not (req.query or "").strip() and req.image is None:
            raise RagError("nothing to search for: give a text query, an image (--image PATH), or both")
        form = self._form({"q": req.query, "top_k": req.top_k, "image_top_k": req.image_top_k,
                           "filters": req.filters or None})
        response = self._send("POST", "/api/search", data=form, files=self._file(req.image))
        result = SearchResult.from_dict(response.json())
        absolute_media(result.hits, self.url)
        return result

    def _ask(self, req: AskRequest) -> ClientAnswerStream:
        form = self._form({"question": req.question, "top_k": req.top_k, "image_top_k": req.image_top_k,
                           "filters": req.filters or None, "dry_run": "true" if req.dry_run else None})
        files = self._file(req.image)
        if files is None:
            events, close = self._events("POST", "/api/ask", json={**form, "filters": req.filters or {}})
        else:
            events, close = self._events("POST", "/api/ask", data=form, files=files)
        return ClientAnswerStream(events, close, self.url)

    def ask(self, request: Union[AskRequest, str, None] = None, **options: Any) -> Any:
        """Retrieve, prompt the server's LLM and return the `Answer` with its citations."""
        return self._ask(as_request(AskRequest, request, "question", options)).get_answer()

    def stream(self, request: Union[AskRequest, str, None] = None, **options: Any) -> ClientAnswerStream:
        """Like `ask()`, but iterate for text deltas, then read `.answer`."""
        return self._ask(as_request(AskRequest, request, "question", options))

    def ingest(self, paths: Iterable[PathLike], *, prune: bool = False, progress: bool = False) -> IngestReport:
        """Have the server index these files and folders (they must be under a folder it allows)."""
        absolute = [str(Path(p).expanduser().absolute()) for p in paths]
        events, close = self._events("POST", "/api/ingest", json={"paths": absolute, "prune": prune})
        bars: Dict[str, Any] = {}
        try:
            for event, data in events:
                if event == "progress" and progress:
                    from tqdm.auto import tqdm

                    bar = bars.get(data["stage"])
                    if bar is None:
                        bar = bars[data["stage"]] = tqdm(total=data["total"], desc=data["stage"], unit="item", leave=False)
                    bar.update(data["done"] - bar.n)
                elif event == "report":
                    return IngestReport.from_dict(data)
                elif event == "error":
                    raise RagError(data.get("error", "the ingest failed"))
        finally:
            for bar in bars.values():
                bar.close()
            close()
        raise RagError("the server closed the ingest stream before the report")

    def info(self) -> Dict[str, Any]:
        """Collections, point counts, models and storage (as `RagService.info`)."""
        data = self._send("GET", "/api/info").json()
        data.pop("server", None)
        return data

    def llm(self) -> Dict[str, Any]:
        """The server's LLM: backend, model, URL, vision, `configured` (as `RagService.llm`)."""
        return self.server_info().get("llm", {})

    def server_info(self) -> Dict[str, Any]:
        """What the server says about itself: version, LLM, limits, ingest state."""
        return self._send("GET", "/api/info").json().get("server", {})

    def close(self) -> None:
        """Close the HTTP connections (the server keeps running)."""
        self._http.close()

    def __enter__(self) -> "RagClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RagClient(url={self.url!r})"


# -- a running `rag serve` ---------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def running_server(storage: PathLike) -> Optional[Dict[str, Any]]:
    """The advertisement (`url`, `pid`, ...) of the `rag serve` that owns `storage`, or None.

    A stale one (its process is gone) is removed. Unreadable or malformed ones count as none.
    """
    path = Path(storage) / SERVER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pid = int(data["pid"])
        str(data["url"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid != os.getpid() and not _pid_alive(pid):
        try:
            path.unlink()
        except OSError:
            pass
        return None
    return data


def server_token(storage: PathLike, advert: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The token a client sends: RAG_SERVER_TOKEN, else the server's token file (if readable)."""
    token = os.environ.get("RAG_SERVER_TOKEN")
    if token:
        return token
    path = Path((advert or {}).get("token_file") or Path(storage) / TOKEN_FILE)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def connect(storage: PathLike) -> Optional[RagClient]:
    """A client of the `rag serve` that owns `storage`, or None when none runs there."""
    advert = running_server(storage)
    if advert is None:
        return None
    return RagClient(advert["url"], token=server_token(storage, advert))
