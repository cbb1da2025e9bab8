"""Plain typed values shared by every layer: the library's API and the HTTP API's schema.

Each value has `to_dict()` (JSON-ready) and `from_dict()` (its inverse), so the same objects
travel through `RagService`, `rag ... --json`, the web server and its clients.
This module imports nothing from the rest of the package but `rag.errors`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Literal, Mapping, Optional, Type, TypeVar

from rag.errors import BadInputError

Modality = Literal["text", "image"]
MODALITIES = ("text", "image")


def _known(cls: type, data: Mapping[str, Any]) -> Dict[str, Any]:
    """The keys of `data` that are fields of the dataclass `cls` (extra keys are ignored)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


V = TypeVar("V", bound="_Plain")


class _Plain:
    """`to_dict()` and `from_dict()` for a dataclass whose fields are all JSON-ready."""

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: Type[V], data: Mapping[str, Any]) -> V:
        """The value back from `to_dict()` output (unknown keys are ignored)."""
        return cls(**_known(cls, data))


@dataclass
class Hit(_Plain):
    """One retrieved passage or image.

    `source` is what a person would cite: the article URL when known, else the file path.
    `n` is the citation number when the hit is a numbered source of an answer.
    `signals` explains the rank: for each signal that matched (e.g. "dense", "bm25",
    "clip"), its rank and score.
    """

    modality: Modality
    score: float
    node_id: str
    source: str
    title: Optional[str] = None
    url: Optional[str] = None
    file: Optional[str] = None
    text: Optional[str] = None  # the passage (text hits) or the caption (image hits)
    image_path: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    n: Optional[int] = None
    signals: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (what `rag search --json` prints for each hit)."""
        data = asdict(self)
        if self.modality == "text":
            data.pop("image_path")
        if self.n is None:
            data.pop("n")
        return data

    def numbered(self, n: int) -> "Hit":
        """A copy carrying citation number `n`."""
        return Hit(**{**asdict(self), "n": n})

    def label(self) -> str:
        """One line for a Sources list: `Title - url-or-path` (image: the image file)."""
        name = self.title or self.source
        where = self.image_path if self.modality == "image" else (self.url or self.source)
        kind = "image: " if self.modality == "image" else ""
        return f"{kind}{name} - {where}" if where and where != name else f"{kind}{name}"


# Limits on a query (docs/reliability.md): longer text is cut (the models read at most a few
# hundred tokens anyway) and said so; more hits than MAX_TOP_K per kind are refused.
MAX_QUERY_CHARS = 10_000
MAX_TOP_K = 1000
NOTHING_TO_SEARCH = "nothing to search for: give a text query, an image (--image PATH), or both"
NOTHING_TO_ASK = "Ask a question, give an image, or both."
_FILTER_VALUE_TYPES = (str, int, float, bool)


def truncation_note(length: int) -> str:
    """The note a result carries when its query text was cut to MAX_QUERY_CHARS."""
    return (f"The query was {length:,} characters long; only its first {MAX_QUERY_CHARS:,} "
            "were used.")


def _check_query(text: Any, image: Any, top_k: Any, image_top_k: Any, filters: Any,
                 nothing: str, what: str) -> List[str]:
    """The checks shared by SearchRequest and AskRequest; returns the notes (text cut)."""
    if text is not None and not isinstance(text, str):
        raise BadInputError(f"the {what} must be text, not {type(text).__name__}")
    if image is not None and not isinstance(image, str):
        raise BadInputError(f"image must be a file path, not {type(image).__name__}")
    if not (text or "").strip() and not image:
        raise BadInputError(nothing)
    for name, value in (("top_k", top_k), ("image_top_k", image_top_k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInputError(f"{name} must be a whole number from 0 to {MAX_TOP_K}, not {value!r}")
        if not 0 <= value <= MAX_TOP_K:
            raise BadInputError(f"{name} must be from 0 to {MAX_TOP_K} (got {value})")
    if top_k == 0 and image_top_k == 0:
        raise BadInputError("top_k and image_top_k are both 0: nothing would be returned")
    if not isinstance(filters, dict):
        raise BadInputError(f"filters must be a mapping of metadata key to value, not {type(filters).__name__}")
    for key, value in filters.items():
        if not isinstance(key, str) or not key.strip():
            raise BadInputError(f"filter keys must be non-empty text (got {key!r})")
        if not isinstance(value, _FILTER_VALUE_TYPES):
            raise BadInputError(
                f"the filter {key} must have a text, number or true/false value (got {type(value).__name__})")
    if text is not None and len(text) > MAX_QUERY_CHARS:
        return [truncation_note(len(text))]
    return []


def _validate_text(request: Any, name: str, nothing: str) -> List[str]:
    """Check a request whose text is the field `name`; cut that text to MAX_QUERY_CHARS if longer."""
    text = getattr(request, name)
    notes = _check_query(text, request.image, request.top_k, request.image_top_k, request.filters, nothing, name)
    if notes:
        setattr(request, name, text[:MAX_QUERY_CHARS])
    return notes


@dataclass
class SearchRequest(_Plain):
    """A query: text, an image (a path on the machine that runs the search), or both.

    The hits come back as one list across passages and images, best first."""

    query: str = ""
    image: Optional[str] = None
    top_k: int = 5  # passages, at most
    image_top_k: int = 3  # images, at most
    filters: Dict[str, Any] = field(default_factory=dict)
    limit: Optional[int] = None  # hits in all (default: top_k + image_top_k)
    min_images: int = 0  # images kept in the list when any matched
    signals: Optional[List[str]] = None  # the signals to rank by (None: all of them)
    fusion: Optional[str] = None  # "dbsf" (default) or "rrf"
    mmr: Optional[float] = None  # MMR lambda for the passages (None: off)

    def validate(self) -> List[str]:
        """Check the request (pure: no file is read); raise BadInputError with what is wrong.

        Returns notes for the caller to pass on: a query over MAX_QUERY_CHARS is cut to that
        length here (`self.query` is replaced) and the note says so.
        """
        return _validate_text(self, "query", NOTHING_TO_SEARCH)


@dataclass
class SearchResult:
    """The hits of one search, best first."""

    hits: List[Hit] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # e.g. the query text was cut

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"hits": [h.to_dict() for h in self.hits]}
        if self.notes:
            data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchResult":
        return cls([Hit.from_dict(h) for h in data.get("hits", [])], list(data.get("notes") or []))


@dataclass
class AskRequest(_Plain):
    """A question for the query engine, with the search options used to find its sources."""

    question: str = ""
    image: Optional[str] = None
    top_k: int = 5
    image_top_k: int = 3
    filters: Dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False  # build the prompt and number the sources, but call no model

    def validate(self) -> List[str]:
        """Like `SearchRequest.validate()`: raise BadInputError, or cut a long question and say so."""
        return _validate_text(self, "question", NOTHING_TO_ASK)


@dataclass
class IngestReport(_Plain):
    """What one ingest did; `ok` is False when any file was skipped."""

    text_nodes: int = 0
    image_nodes: int = 0
    files_indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    ignored: int = 0
    skipped: List[Dict[str, str]] = field(default_factory=list)
    points: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    graph_seconds: float = 0.0  # of `seconds`, spent adding new points to the HNSW graphs

    @property
    def ok(self) -> bool:
        return not self.skipped

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


# Keys every numbered source carries in an answer's JSON, even when empty; other Hit fields
# (file, metadata, signals) appear only when set.
_SOURCE_KEYS = ("n", "modality", "source", "title", "url", "text", "score", "node_id", "image_path")


def _source_dict(hit: Hit) -> Dict[str, Any]:
    return {k: v for k, v in hit.to_dict().items() if k in _SOURCE_KEYS or v not in (None, {}, [])}


@dataclass
class Answer:
    """The result of a question: answer text (None without an LLM), numbered sources, citations.

    `sources` and `cited` are Hits carrying their citation number `n`. Without an LLM,
    `prompt` is the prompt that would be sent, as text, and `prompt_parts` the same prompt as
    parts: `{"text": ...}` or `{"image": path, "n": n}` (no `n`: the question's own image).
    """

    question: str
    answer: Optional[str]
    sources: List[Hit] = field(default_factory=list)
    cited: List[Hit] = field(default_factory=list)
    unknown_citations: List[int] = field(default_factory=list)
    prompt: Optional[str] = None
    prompt_parts: List[Dict[str, Any]] = field(default_factory=list)
    image: Optional[str] = None  # the image given with the question
    llm: Optional[Dict[str, Any]] = None  # backend, model, base_url, vision
    vision: bool = False  # whether pixels were sent
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (what `rag ask --json` prints); `prompt` keys only without an LLM."""
        data: Dict[str, Any] = {
            "question": self.question,
            "image": self.image,
            "answer": self.answer,
            "sources": [_source_dict(s) for s in self.sources],
            "cited": [_source_dict(s) for s in self.cited],
            "unknown_citations": list(self.unknown_citations),
            "llm": self.llm,
            "vision": self.vision,
            "notes": list(self.notes),
        }
        if self.prompt is not None:
            data["prompt"] = self.prompt
        if self.prompt_parts:
            data["prompt_parts"] = [dict(p) for p in self.prompt_parts]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Answer":
        values = _known(cls, data)
        values.setdefault("question", "")
        values.setdefault("answer", None)
        for key in ("sources", "cited"):
            values[key] = [Hit.from_dict(h) for h in data.get(key) or []]
        return cls(**values)

    def __str__(self) -> str:
        return self.answer if self.answer is not None else (self.prompt or "")


def as_request(cls: type, first: Any, field: str, options: Mapping[str, Any]) -> Any:
    """A request of type `cls` from a request, or from a positional text plus keyword options.

    `service.search("moon", top_k=3)` and `service.search(SearchRequest("moon", top_k=3))`
    mean the same; `None` options are left at their defaults; an image path becomes a string.
    """
    if isinstance(first, cls):
        return first
    values = {k: v for k, v in options.items() if v is not None}
    if first is not None:
        values[field] = first
    if values.get("image") is not None:
        values["image"] = str(values["image"])
    return cls(**values)
