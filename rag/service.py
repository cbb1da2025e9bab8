"""`RagService`: one object that owns the settings, the index, the retriever and the query engine.

The CLI, the notebooks, the display helpers and (next) the web server all go through it. Its
inputs and outputs are the plain values of `rag.types`, so the same calls can be served over
HTTP unchanged.

    from rag import RagService

    with RagService() as rag:                     # settings from RAG_* variables
        rag.ingest(["my-articles/"])
        for hit in rag.search("a cup of coffee").hits:
            print(hit.modality, hit.title, hit.score)
        print(rag.ask("Who wrote one of the first compilers?"))
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

from rag.config import Settings
from rag.types import AskRequest, IngestReport, SearchRequest, SearchResult, as_request

PathLike = Union[str, Path]

SERVER_FILE = "server.json"  # written by `rag serve` into the storage folder it owns
TOKEN_FILE = "server.token"  # the access token (mode 0600) when the server requires one


class RagService:
    """The index and everything that queries it, behind one small API.

    Models load on first use: `info()` never loads one; `search()` loads the ones a query needs.
    Pass `index=` (a `RagIndex`) to serve an index opened elsewhere, `retriever=` for another
    retriever (anything with our `search()`), `llm=` for a LlamaIndex LLM instead of the one
    RAG_LLM names.
    """

    def __init__(self, settings: Optional[Settings] = None, *, index: Any = None, retriever: Any = None,
                 llm: Any = None, **index_options: Any) -> None:
        self.settings = settings or (index.settings if index is not None else Settings.from_env())
        if index is None:
            from rag.index.core import RagIndex

            index = RagIndex(self.settings, **index_options)
        self.index = index
        # the models the index settled on (those not set explicitly come from the index itself)
        self.settings = self.settings.with_overrides(text_model=index.settings.text_model,
                                                     image_model=index.settings.image_model)
        self._llm = llm
        self._retriever: Any = retriever
        self._engines: Dict[Any, Any] = {}

    # -- parts ---------------------------------------------------------------------------
    @property
    def retriever(self) -> Any:
        """The `Retriever` over both collections."""
        if self._retriever is None:
            from rag.search.retriever import Retriever

            self._retriever = Retriever(self.index)
        return self._retriever

    def query_engine(self, top_k: int = 5, image_top_k: int = 3) -> Any:
        """The `RagQueryEngine` (LLM from RAG_LLM unless one was given) for these search sizes."""
        key = (top_k, image_top_k)
        if key not in self._engines:
            from rag.answer.engine import RagQueryEngine

            if self._llm is not None:
                engine = RagQueryEngine(self.retriever, self._llm, top_k=top_k, image_top_k=image_top_k)
            else:
                engine = RagQueryEngine.from_settings(self.settings, self.retriever, top_k=top_k,
                                                      image_top_k=image_top_k)
            self._engines[key] = engine
        return self._engines[key]

    # -- the API -------------------------------------------------------------------------
    def search(self, request: Union[SearchRequest, str, None] = None, **options: Any) -> SearchResult:
        """Passages and images for a text and/or image query (`SearchRequest` fields as options)."""
        req = as_request(SearchRequest, request, "query", options)
        hits = self.retriever.search(req.query, image=req.image, top_k=req.top_k, image_top_k=req.image_top_k,
                                     filters=req.filters or None)
        return SearchResult(hits)

    def ask(self, request: Union[AskRequest, str, None] = None, **options: Any) -> Any:
        """Retrieve, prompt the LLM (none by default) and return the `Answer` with its citations."""
        req = as_request(AskRequest, request, "question", options)
        engine = self.query_engine(req.top_k, req.image_top_k)
        return engine.ask(req.question, image=req.image, filters=req.filters or None)

    def stream(self, request: Union[AskRequest, str, None] = None, **options: Any) -> Any:
        """Like `ask()`, but an `AnswerStream`: iterate for text deltas, then `.answer`."""
        req = as_request(AskRequest, request, "question", options)
        engine = self.query_engine(req.top_k, req.image_top_k)
        return engine.stream(req.question, image=req.image, filters=req.filters or None)

    def llm(self) -> Dict[str, Any]:
        """The LLM answers come from: backend, model, URL, vision, `configured` (never a key).

        Builds it (once), so a misconfigured RAG_LLM fails here, before any retrieval.
        """
        engine = self.query_engine()
        return {**engine.spec.to_dict(), "configured": engine.llm is not None}

    def ingest(self, paths: Iterable[PathLike], *, prune: bool = False, progress: bool = False) -> IngestReport:
        """Index files and folders incrementally; bad files are reported, never fatal."""
        from rag.index.ingest import ingest

        return ingest(self.index, [Path(p) for p in paths], prune=prune, progress=progress)

    def info(self) -> Dict[str, Any]:
        """Collections, point counts, models and storage (loads no model)."""
        return self.index.info()

    def close(self) -> None:
        """Let the storage go (another process may open it afterwards)."""
        self.index.close()

    def __enter__(self) -> "RagService":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @classmethod
    def connect(cls, settings: Optional[Settings] = None) -> Any:
        """A `RagClient` to the `rag serve` that owns the settings' storage, or None if none runs."""
        settings = settings or Settings.from_env()
        advert = running_server(settings.storage)
        if advert is None:
            return None
        from rag.client import RagClient

        return RagClient(advert["url"], token=server_token(settings.storage, advert))

    def __repr__(self) -> str:
        return f"RagService(storage={str(self.settings.storage)!r})"


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


def open_service(settings: Optional[Settings] = None, *, no_server: bool = False, **options: Any) -> Any:
    """A `RagClient` when a `rag serve` owns the storage (unless `no_server`), else a `RagService`.

    Both have search/ask/stream/ingest/info/close and return the same values.
    """
    settings = settings or Settings.from_env()
    if not no_server:
        client = RagService.connect(settings)
        if client is not None:
            return client
    return RagService(settings, **options)

