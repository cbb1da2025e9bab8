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

from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

from rag.config import Settings
from rag.types import AskRequest, IngestReport, SearchRequest, SearchResult

PathLike = Union[str, Path]


def _request(cls: type, first: Any, field: str, options: Dict[str, Any]) -> Any:
    """A request object from either a request, or a positional text plus keyword options."""
    if isinstance(first, cls):
        return first
    values = {k: v for k, v in options.items() if v is not None}
    if first is not None:
        values[field] = first
    if values.get("image") is not None:
        values["image"] = str(values["image"])
    return cls(**values)


class RagService:
    """The index and everything that queries it, behind one small API.

    Models load on first use: `info()` never loads one; `search()` loads the ones a query needs.
    Pass `index=` (a `RagIndex`) to serve an index opened elsewhere, `llm=` for a LlamaIndex LLM
    instead of the one RAG_LLM names.
    """

    def __init__(self, settings: Optional[Settings] = None, *, index: Any = None, llm: Any = None,
                 **index_options: Any) -> None:
        self.settings = settings or (index.settings if index is not None else Settings.from_env())
        if index is None:
            from rag.index.core import RagIndex

            index = RagIndex(self.settings, **index_options)
        self.index = index
        self.settings = index.settings  # models not set explicitly come from the index itself
        self._llm = llm
        self._retriever: Any = None
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
        """Passages and images in one ranked list for a text and/or image query (`SearchRequest` fields)."""
        from rag.errors import BadInputError
        from rag.search.signals import FusionSettings

        req = _request(SearchRequest, request, "query", options)
        try:
            fusion = FusionSettings.from_options(req.signals, req.fusion, req.mmr)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
        hits = self.retriever.search(req.query, image=req.image, top_k=req.top_k, image_top_k=req.image_top_k,
                                     filters=req.filters or None, limit=req.limit, min_images=req.min_images,
                                     fusion=fusion)
        return SearchResult(hits)

    def ask(self, request: Union[AskRequest, str, None] = None, **options: Any) -> Any:
        """Retrieve, prompt the LLM (none by default) and return the `Answer` with its citations."""
        req = _request(AskRequest, request, "question", options)
        engine = self.query_engine(req.top_k, req.image_top_k)
        return engine.ask(req.question, image=req.image, filters=req.filters or None)

    def stream(self, request: Union[AskRequest, str, None] = None, **options: Any) -> Any:
        """Like `ask()`, but an `AnswerStream`: iterate for text deltas, then `.answer`."""
        req = _request(AskRequest, request, "question", options)
        engine = self.query_engine(req.top_k, req.image_top_k)
        return engine.stream(req.question, image=req.image, filters=req.filters or None)

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

    def __repr__(self) -> str:
        return f"RagService(storage={str(self.settings.storage)!r})"
