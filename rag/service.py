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

import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

from rag.config import Settings
from rag.errors import RagError
from rag.types import AskRequest, IngestReport, SearchRequest, SearchResult, as_request

PathLike = Union[str, Path]
logger = logging.getLogger(__name__)


def check_query_image(image: Optional[str], max_pixels: int) -> None:
    """Raise BadInputError naming the file when a query image is missing, no file, or no image."""
    if image is None:
        return
    from rag.errors import BadInputError
    from rag.media.images import open_checked

    path = Path(image)
    if not path.exists():
        raise BadInputError(image, "no such image file")
    if not path.is_file():
        raise BadInputError(image, "not a file")
    try:
        open_checked(path, image, max_pixels)
    except OSError as exc:
        raise BadInputError(image, f"cannot be read ({exc.strerror or exc})") from None


def _checked(req: Any, max_pixels: int) -> List[str]:
    """Validate a request (see `SearchRequest.validate`) and its image; the notes to pass on."""
    notes = req.validate()
    check_query_image(req.image, max_pixels)
    if notes:
        logger.warning("%s", notes[0])
    return notes


class RagService:
    """The index and everything that queries it, behind one small API.

    Models load on first use: `info()` never loads one; `search()` loads the ones a query needs.
    Pass `index=` (a `RagIndex`) to serve an index opened elsewhere, `retriever=` for another
    retriever (anything with our `search()`), `llm=` for a LlamaIndex LLM instead of the one
    RAG_LLM names.
    """

    def __init__(self, settings: Optional[Settings] = None, *, index: Any = None, retriever: Any = None,
                 llm: Any = None, no_server: bool = False, **index_options: Any) -> None:
        self.settings = settings or (index.settings if index is not None else Settings.from_env())
        self._llm = llm
        self._retriever: Any = retriever
        self._engines: Dict[Any, Any] = {}
        self.remote: Any = None  # a RagClient when a `rag serve` owns the storage
        if index is None and retriever is None and llm is None and not index_options and not no_server:
            from rag.client import connect

            self.remote = connect(self.settings.storage)
        if self.remote is not None:
            self.index = None
            return
        if index is None:
            from rag.index.core import RagIndex

            index = RagIndex(self.settings, **index_options)
        self.index = index
        # the models the index settled on (those not set explicitly come from the index itself)
        self.settings = self.settings.with_overrides(text_model=index.settings.text_model,
                                                     image_model=index.settings.image_model)

    def _local(self, what: str) -> None:
        if self.remote is not None:
            raise RagError(f"{what} is not available here: the index in {self.settings.storage} is owned by "
                           f"the rag serve at {self.remote.url}, which this service talks to. Use search/ask/"
                           "stream/ingest/info, or stop the server (or pass no_server=True when it is stopped).")

    # -- parts ---------------------------------------------------------------------------
    @property
    def retriever(self) -> Any:
        """The `Retriever` over both collections."""
        self._local("the retriever")
        if self._retriever is None:
            from rag.search.retriever import Retriever

            self._retriever = Retriever(self.index)
        return self._retriever

    def query_engine(self, top_k: int = 5, image_top_k: int = 3, *, dry_run: bool = False) -> Any:
        """The `RagQueryEngine` for these search sizes: LLM from RAG_LLM unless one was given,
        none at all with `dry_run` (the answer then holds the prompt that would be sent)."""
        self._local("the query engine")
        key = (top_k, image_top_k, dry_run)
        if key not in self._engines:
            from rag.answer.engine import RagQueryEngine

            sizes = {"top_k": top_k, "image_top_k": image_top_k}
            if dry_run or self._llm is not None:
                engine = RagQueryEngine(self.retriever, None if dry_run else self._llm, **sizes)
            else:
                engine = RagQueryEngine.from_settings(self.settings, self.retriever, **sizes)
            self._engines[key] = engine
        return self._engines[key]

    # -- the API -------------------------------------------------------------------------
    def search(self, request: Union[SearchRequest, str, None] = None, **options: Any) -> SearchResult:
        """Passages and images in one ranked list for a text and/or image query (`SearchRequest` fields)."""
        from rag.errors import BadInputError
        from rag.search.signals import FusionSettings

        req = as_request(SearchRequest, request, "query", options)
        notes = _checked(req, self.settings.max_image_pixels)
        if self.remote is not None:
            return self.remote.search(req)
        try:
            fusion = FusionSettings.from_options(req.signals, req.fusion, req.mmr)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
        hits = self.retriever.search(req.query, image=req.image, top_k=req.top_k, image_top_k=req.image_top_k,
                                     filters=req.filters or None, limit=req.limit, min_images=req.min_images,
                                     fusion=fusion)
        return SearchResult(hits, notes + self.retriever.notes())

    def _question(self, request: Any, options: Dict[str, Any]) -> Any:
        """The checked AskRequest, its notes, and the engine to answer it (None: the server's)."""
        req = as_request(AskRequest, request, "question", options)
        notes = _checked(req, self.settings.max_image_pixels)
        if self.remote is not None:
            return req, notes, None
        return req, notes, self.query_engine(req.top_k, req.image_top_k, dry_run=req.dry_run)

    def ask(self, request: Union[AskRequest, str, None] = None, **options: Any) -> Any:
        """Retrieve, prompt the LLM (none by default) and return the `Answer` with its citations."""
        req, notes, engine = self._question(request, options)
        if engine is None:
            return self.remote.ask(req)
        answer = engine.ask(req.question, image=req.image, filters=req.filters or None)
        answer.notes[:0] = notes
        return answer

    def stream(self, request: Union[AskRequest, str, None] = None, **options: Any) -> Any:
        """Like `ask()`, but an `AnswerStream`: iterate for text deltas, then `.answer`."""
        req, notes, engine = self._question(request, options)
        if engine is None:
            return self.remote.stream(req)
        stream = engine.stream(req.question, image=req.image, filters=req.filters or None)
        stream.add_notes(notes)
        return stream

    def llm(self) -> Dict[str, Any]:
        """The LLM answers come from: backend, model, URL, vision, `configured` (never a key).

        Builds it (once), so a misconfigured RAG_LLM fails here, before any retrieval.
        """
        if self.remote is not None:
            return self.remote.llm()
        engine = self.query_engine()
        return {**engine.spec.to_dict(), "configured": engine.llm is not None}

    def ingest(self, paths: Iterable[PathLike], *, prune: bool = False, progress: bool = False) -> IngestReport:
        """Index files and folders incrementally; bad files are reported, never fatal."""
        # LlamaIndex Documents / ImageDocuments are accepted too (see ingest_documents)
        items = list(paths)
        documents = [item for item in items if not isinstance(item, (str, Path))]
        if documents:
            if len(documents) < len(items):
                raise RagError("ingest() takes paths or LlamaIndex Documents, not both in one call")
            return self.ingest_documents(documents, progress=progress)
        if self.remote is not None:
            return self.remote.ingest(items, prune=prune, progress=progress)
        from rag.index.ingest import ingest

        return ingest(self.index, [Path(p) for p in items], prune=prune, progress=progress)

    def ingest_documents(self, documents: Iterable[Any], *, progress: bool = False) -> IngestReport:
        """Index LlamaIndex Documents and ImageDocuments through the ledger (incremental)."""
        self._local("ingesting LlamaIndex Documents")
        return self.index.ingest_documents(documents, progress=progress)

    def insert(self, document: Any) -> IngestReport:
        """Index one LlamaIndex Document or ImageDocument (LlamaIndex's `index.insert(doc)`)."""
        self._local("inserting LlamaIndex Documents")
        return self.index.insert(document)

    # -- LlamaIndex entry points ----------------------------------------------------------
    def as_retriever(self, top_k: int = 5, image_top_k: int = 3, filters: Any = None, **kwargs: Any) -> Any:
        """Our search as a LlamaIndex `BaseRetriever` (`rag.search.llama.RagRetriever`)."""
        from rag.search.llama import RagRetriever

        return RagRetriever(self.retriever, top_k=top_k, image_top_k=image_top_k, filters=filters, **kwargs)

    def as_query_engine(self, llm: Any = None, **kwargs: Any) -> Any:
        """A `RagQueryEngine` (LlamaIndex query engine) over this index.

        `llm`: a LlamaIndex LLM; without one, the LLM this service was given or RAG_LLM names,
        which is none by default: the no-LLM mode (prompt and sources), never OpenAI.
        Other options go to `RagQueryEngine` (top_k, image_top_k, node_postprocessors,
        callback_manager, streaming, ...); `retriever=` replaces ours with any BaseRetriever.
        """
        from rag.answer.engine import RagQueryEngine

        retriever = kwargs.pop("retriever", None) or self.retriever
        llm = llm if llm is not None else self._llm
        if llm is not None:
            return RagQueryEngine(retriever, llm, **kwargs)
        return RagQueryEngine.from_settings(self.settings, retriever, **kwargs)

    def info(self) -> Dict[str, Any]:
        """Collections, point counts, models and storage (loads no model)."""
        return self.remote.info() if self.remote is not None else self.index.info()

    def close(self) -> None:
        """Let the storage go (another process may open it afterwards)."""
        (self.remote if self.remote is not None else self.index).close()

    def __enter__(self) -> "RagService":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @classmethod
    def connect(cls, settings: Optional[Settings] = None) -> Any:
        """A `RagClient` to the `rag serve` that owns the settings' storage, or None if none runs."""
        from rag.client import connect

        return connect((settings or Settings.from_env()).storage)

    def __repr__(self) -> str:
        via = f", via={self.remote.url!r}" if self.remote is not None else ""
        return f"RagService(storage={str(self.settings.storage)!r}{via})"


def open_service(settings: Optional[Settings] = None, *, no_server: bool = False, **options: Any) -> "RagService":
    """`RagService(settings, no_server=..., **options)`: the name the CLI and scripts call."""
    return RagService(settings, no_server=no_server, **options)
