"""One settings object, declared once, read from `RAG_*` environment variables and passed down.

Every setting is a field of `Settings` declared with `_setting(...)`: its type, default, allowed
values or range, and help text. That declaration is the only table: values are parsed and
checked once, when a `Settings` is built (`Settings.from_env()`, `Settings(...)`,
`with_overrides`), so code that receives a `Settings` trusts it. The README's settings list is
generated from it (`python -m rag.config --markdown`).

Nothing here reads the environment at import time: call `Settings.from_env()`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

from rag.errors import RagError

DEFAULT_TEXT_MODEL = "BAAI/bge-small-en-v1.5"
DEFAULT_IMAGE_MODEL = "openai/clip-vit-base-patch32"
# BGE v1.5 recommends this instruction on short retrieval queries (not on passages).
BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "

_KIND_WORDS = {int: "an integer", float: "a number", str: "a string", Path: "a path"}


class SettingsError(RagError, ValueError):
    """A setting has a value of the wrong type, outside its range, or not among its choices."""


@dataclass(frozen=True)
class Spec:
    """How one setting is declared: type, default, allowed values or range, help text."""

    name: str
    kind: type
    default: Any
    help: str
    choices: Tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)  # other spellings of a choice
    gt: Optional[float] = None  # the value must be above this
    ge: Optional[float] = None  # the value must be at least this
    optional: bool = False  # None (unset) is allowed
    secret: bool = False  # never shown (repr, docs)
    shown_default: Optional[str] = None  # how the default reads in the docs, when not the value

    @property
    def env(self) -> str:
        """The environment variable, e.g. `RAG_CHUNK_SIZE`."""
        return f"RAG_{self.name.upper()}"

    def _fail(self, what: str, value: Any) -> SettingsError:
        return SettingsError(f"{self.env} must be {what}, got {value!r}")

    def parse(self, value: Any) -> Any:
        """The value as this setting's type, checked; raises SettingsError saying what is wrong."""
        if value is None:
            if self.optional:
                return None
            raise self._fail(_KIND_WORDS[self.kind], value)
        if self.choices:
            return self._choice(value)
        if self.kind in (int, float):
            number = self._number(value)
            if self.gt is not None and not number > self.gt:
                raise self._fail(f"above {_plain(self.gt)}", value)
            if self.ge is not None and not number >= self.ge:
                raise self._fail(f"at least {_plain(self.ge)}", value)
            return number
        if self.kind is Path:
            if isinstance(value, (str, os.PathLike)):
                return Path(value)
            raise self._fail("a path", value)
        if isinstance(value, os.PathLike):  # a model folder given as a Path
            return os.fspath(value)
        if not isinstance(value, str):
            raise self._fail("a string", value)
        return value

    def _number(self, value: Any) -> Any:
        if isinstance(value, bool):
            raise self._fail(_KIND_WORDS[self.kind], value)
        if self.kind is int and isinstance(value, int):
            return value
        if self.kind is float and isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return self.kind(value.strip())
            except ValueError:
                pass
        raise self._fail(_KIND_WORDS[self.kind], value)

    def _choice(self, value: Any) -> str:
        text = str(value).strip().lower() if isinstance(value, (str, bool)) else None
        text = self.aliases.get(text, text) if text is not None else None
        if text not in self.choices:
            raise self._fail(_or_list(self.choices), value)
        return text


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _or_list(words: Tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _setting(default: Any, help: str, *, kind: Optional[type] = None, **options: Any) -> Any:
    """Declare one settings field (its `Spec` rides in the dataclass field's metadata)."""
    spec = dict(kind=kind or type(default), default=default, help=help, **options)
    return field(default=default, repr=not options.get("secret", False), metadata={"spec": spec})


_SWITCH_ALIASES = {"1": "on", "yes": "on", "true": "on", "0": "off", "no": "off", "false": "off"}
_VISION_ALIASES = {"": "auto", "1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}


@dataclass(frozen=True)
class Settings:
    """Everything the library needs to know; each field maps to `RAG_<FIELD>`.

    `explicit` names the fields that were set on purpose (an environment variable, an override,
    or a value other than the default given to the constructor); the index uses it to tell
    "use this model" from "use whatever built the index".
    """

    storage: Path = _setting(Path("./storage"), "index folder (`--storage`)", kind=Path,
                             shown_default="./storage")
    text_model: str = _setting(DEFAULT_TEXT_MODEL, "hub id or local folder (`--text-model`); "
                               "unset: the model that built the index, else this default")
    image_model: str = _setting(DEFAULT_IMAGE_MODEL, "hub id or local folder (`--image-model`); "
                                "unset: the model that built the index, else this default")
    image_backend: str = _setting("clip-transformers", "`clip-transformers` (batched, no torchvision) or "
                                  "`clip`: the stock `ClipEmbedding` (extra `rag[clip]`)",
                                  choices=("clip-transformers", "clip"))
    text_query_instruction: Optional[str] = _setting(None, "prefix for text queries (unset: BGE's "
                                                     "instruction for BGE models)", kind=str, optional=True)
    device: str = _setting("auto", "`auto`: `cuda` when a GPU is visible, else `cpu`; or a torch device")
    precision: str = _setting("auto", "`auto`: `bf16` where the CPU has native bf16, else `fp32`; `int8` is "
                              "opt-in (faster, ~0.88-0.95 cosine to fp32; see docs/benchmarks.md)",
                              choices=("auto", "fp32", "bf16", "int8"))
    torch_threads: int = _setting(0, "torch intra-op threads (0: torch's default)", ge=0)
    qdrant_url: Optional[str] = _setting(None, "a Qdrant server or cluster instead of the embedded store",
                                         kind=str, optional=True)
    qdrant_api_key: Optional[str] = _setting(None, "the server's API key", kind=str, optional=True, secret=True)
    shard_number: Optional[int] = _setting(None, "server only: shards of a new collection (unset: the server's "
                                           "default)", kind=int, optional=True, gt=0)
    replication_factor: Optional[int] = _setting(None, "server only: replicas of each shard (unset: the "
                                                 "server's default)", kind=int, optional=True, gt=0)
    store: str = _setting("edge", "embedded store: `edge` (qdrant-edge) or `local` (qdrant-client's folder mode)",
                          choices=("edge", "local"))
    hnsw_m: int = _setting(16, "edge store: HNSW links per point (graph build)", gt=0)
    hnsw_ef_construct: int = _setting(100, "edge store: HNSW beam width while building the graph", gt=0)
    hnsw_ef: int = _setting(128, "edge store: HNSW beam width per query", gt=0)
    quantization: str = _setting("int8", "edge store: `int8` (scalar quantization, rescored with the float "
                                 "vectors) or `none`", choices=("int8", "none"))
    text_collection: str = _setting("text", "name of the passages collection")
    image_collection: str = _setting("image", "name of the images collection")
    chunk_size: int = _setting(480, "passage size in the text model's tokens (BGE reads 512 at most)", gt=0)
    chunk_overlap: int = _setting(48, "tokens shared by consecutive passages (below the chunk size)", ge=0)
    text_batch_size: int = _setting(32, "passages per text-model batch", gt=0)
    image_batch_size: int = _setting(16, "images per CLIP batch", gt=0)
    query_batch: int = _setting(32, "concurrent queries encoded in one forward pass (1: one at a time)", gt=0)
    query_threads: int = _setting(0, "intra-op threads of each of a text query's two encoders (BGE and CLIP's "
                                  "text tower), which run at once (0: torch's threads split between them)", ge=0)
    text_graph: str = _setting("on", "`on`: the text encoders (BGE, CLIP's text tower) run as traced TorchScript "
                               "graphs from their second query (CPU, fp32: the same vectors, ~10 ms less per "
                               "query; document batches never trace); `off`: always eager", choices=("on", "off"), aliases=_SWITCH_ALIASES)
    max_image_pixels: int = _setting(64_000_000, "larger images are skipped as decompression bombs", gt=0)
    llm: str = _setting("none", "the answering model's backend (see `rag ask`)",
                        choices=("none", "openai", "openai-like", "ollama"))
    llm_model: Optional[str] = _setting(None, "model name (unset: `gpt-4o-mini` for openai, `qwen2.5vl` "
                                        "for ollama)", kind=str, optional=True)
    llm_base_url: Optional[str] = _setting(None, "server address (needed by openai-like)", kind=str, optional=True)
    llm_api_key: Optional[str] = _setting(None, "API key (openai: or `OPENAI_API_KEY`)", kind=str,
                                          optional=True, secret=True)
    llm_timeout: float = _setting(60.0, "seconds per LLM call", gt=0)
    llm_vision: str = _setting("auto", "send images: `auto` (guess from the model name), `true` or `false`",
                               choices=("auto", "true", "false"), aliases=_VISION_ALIASES)
    llm_max_retries: int = _setting(2, "retries of a failed LLM call", ge=0)
    llm_max_image_side: int = _setting(768, "images sent to a vision model are resized to at most this "
                                       "many pixels a side", gt=0)
    wiki_api_url: str = _setting("https://en.wikipedia.org/w/api.php", "any MediaWiki `api.php` for `rag fetch`",
                                 shown_default="English Wikipedia")
    wiki_contact: Optional[str] = _setting(None, "your contact, put in `rag fetch`'s User-Agent as Wikimedia "
                                           "asks", kind=str, optional=True)
    server_token: Optional[str] = _setting(None, "`rag serve`: the token clients must send when it listens beyond "
                                           "loopback (unset: a random one in `<storage>/server.token`)",
                                           kind=str, optional=True, secret=True)
    server_allow_ingest: Optional[str] = _setting(None, "`rag serve`: folders (`:`-separated) whose files clients may "
                                                  "ingest (`--allow-ingest`); unset: none", kind=str, optional=True)
    server_max_searches: int = _setting(8, "`rag serve`: searches (and thumbnails) running at once; more wait",
                                        gt=0)
    server_max_asks: int = _setting(2, "`rag serve`: answers streaming at once; more wait", gt=0)
    server_client_requests: int = _setting(6, "`rag serve`: API requests one client address may have running or "
                                           "waiting at once; more get 429 (0: no limit; loopback clients share "
                                           "only the global limits)", ge=0)
    server_queue_seconds: float = _setting(10.0, "`rag serve`: how long a request waits for a free slot before "
                                           "503 busy", gt=0)
    server_search_seconds: float = _setting(30.0, "`rag serve`: a search that runs longer gets 504", gt=0)
    server_body_seconds: float = _setting(60.0, "`rag serve`: a request body (an upload) must arrive within this "
                                          "many seconds, else 408", gt=0)
    server_max_body_bytes: int = _setting(12 * 1024 * 1024, "`rag serve`: larger request bodies get 413", gt=0,
                                          shown_default="`12582912` (12 MiB)")
    server_max_upload_bytes: int = _setting(10 * 1024 * 1024, "`rag serve`: larger query images get 413", gt=0,
                                            shown_default="`10485760` (10 MiB)")
    server_max_upload_pixels: int = _setting(40_000_000, "`rag serve`: query images with more pixels are refused "
                                             "(decompression bombs)", gt=0)
    explicit: Optional[FrozenSet[str]] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for spec in SPECS:
            value = getattr(self, spec.name)
            parsed = spec.parse(value)
            if parsed is not value:
                object.__setattr__(self, spec.name, parsed)
        if self.chunk_overlap >= self.chunk_size:
            raise SettingsError(f"RAG_CHUNK_OVERLAP must be below RAG_CHUNK_SIZE ({self.chunk_size}), "
                                f"got {self.chunk_overlap!r}")
        if self.explicit is None:  # built directly: what differs from the defaults was chosen
            chosen = frozenset(s.name for s in SPECS if getattr(self, s.name) != s.default)
        else:
            chosen = frozenset(self.explicit)
        object.__setattr__(self, "explicit", chosen)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "Settings":
        """Build settings from `RAG_*` variables; keyword overrides (not None) win."""
        env = os.environ if environ is None else environ
        values: Dict[str, Any] = {}
        for spec in SPECS:
            raw = env.get(spec.env)
            if raw is not None and raw != "":
                values[spec.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - set(SPEC_BY_NAME))
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        return cls(**values, explicit=frozenset(values))

    def with_overrides(self, **overrides: Any) -> "Settings":
        """A copy with the non-None overrides applied (they count as set explicitly)."""
        chosen = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, explicit=frozenset(self.explicit or ()) | frozenset(chosen), **chosen)

    def is_explicit(self, name: str) -> bool:
        """Was this field set on purpose (environment, override, or a non-default value)?"""
        return name in (self.explicit or ())

    @property
    def uses_server(self) -> bool:
        """Whether a Qdrant server (RAG_QDRANT_URL) holds the collections."""
        return bool(self.qdrant_url)


SPECS: Tuple[Spec, ...] = tuple(Spec(name=f.name, **f.metadata["spec"]) for f in fields(Settings)
                                if "spec" in f.metadata)
SPEC_BY_NAME: Dict[str, Spec] = {spec.name: spec for spec in SPECS}


def default(name: str) -> Any:
    """The declared default of one setting."""
    return SPEC_BY_NAME[name].default


def _shown_default(spec: Spec) -> str:
    if spec.shown_default is not None:
        return f"`{spec.shown_default}`" if spec.kind is Path else spec.shown_default
    if spec.default is None:
        return "unset"
    value = spec.default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value >= 10_000:
        value = f"{value:_}"
    return f"`{value}`"


def _allowed(spec: Spec) -> str:
    if spec.choices:
        return ", ".join(f"`{c}`" for c in spec.choices)
    if spec.gt is not None:
        return f"{_KIND_WORDS[spec.kind]} above {_plain(spec.gt)}"
    if spec.ge is not None:
        return f"{_KIND_WORDS[spec.kind]} from {_plain(spec.ge)}"
    return _KIND_WORDS[spec.kind]


def settings_markdown() -> str:
    """The settings table as Markdown (the README's list is this text)."""
    lines = ["| variable | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for spec in SPECS:
        lines.append(f"| `{spec.env}` | {_shown_default(spec)} | {_allowed(spec)} | {spec.help} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m rag.config --markdown` prints the settings table for the README."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--markdown"]:
        print("usage: python -m rag.config --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(settings_markdown())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
