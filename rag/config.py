"""One settings object, read from `RAG_*` environment variables once and passed down.

Nothing here reads the environment at import time: call `Settings.from_env()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional

DEFAULT_TEXT_MODEL = "BAAI/bge-small-en-v1.5"
DEFAULT_IMAGE_MODEL = "openai/clip-vit-base-patch32"
# BGE v1.5 recommends this instruction on short retrieval queries (not on passages).
BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


@dataclass(frozen=True)
class Settings:
    """Everything the library needs to know; each field maps to `RAG_<FIELD>`."""

    storage: Path = Path("./storage")
    text_model: str = DEFAULT_TEXT_MODEL
    image_model: str = DEFAULT_IMAGE_MODEL
    # "clip-transformers" (default, batched, no torchvision) or "clip" (stock llama-index-embeddings-clip).
    image_backend: str = "clip-transformers"
    text_query_instruction: Optional[str] = None  # None: BGE's instruction for BGE models
    device: str = "auto"  # auto: cuda when available, else cpu
    precision: str = "auto"  # auto (bf16 where the CPU has it natively, else fp32) | fp32 | bf16 | int8
    torch_threads: int = 0  # 0: torch's default
    qdrant_url: Optional[str] = None
    qdrant_api_key: Optional[str] = field(default=None, repr=False)
    # Embedded store: "edge" (qdrant-edge, the real engine in-process) or "local" (qdrant-client path mode).
    store: str = "edge"
    text_collection: str = "text"
    image_collection: str = "image"
    chunk_size: int = 480  # in the text model's own tokens; BGE reads at most 512
    chunk_overlap: int = 48
    text_batch_size: int = 32
    image_batch_size: int = 16
    max_image_pixels: int = 64_000_000
    llm: str = "none"
    llm_model: Optional[str] = None
    llm_base_url: Optional[str] = None
    llm_api_key: Optional[str] = field(default=None, repr=False)
    llm_timeout: float = 60.0  # seconds per LLM call
    llm_vision: str = "auto"  # auto (guess from the model name) | true | false
    llm_max_retries: int = 2
    llm_max_image_side: int = 768
    wiki_api_url: str = "https://en.wikipedia.org/w/api.php"
    wiki_contact: Optional[str] = None  # put in the User-Agent, as Wikimedia asks

    @classmethod
    def from_env(
        cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any
    ) -> "Settings":
        """Build settings from `RAG_*` variables; keyword overrides (not None) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"RAG_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "storage" in values:
            values["storage"] = Path(values["storage"])
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> "Settings":
        """A copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def uses_server(self) -> bool:
        return bool(self.qdrant_url)


def _coerce(name: str, raw: str, annotation: Any) -> Any:
    kind = str(annotation)
    for word, convert, expected in (("int", int, "an integer"), ("float", float, "a number")):
        if kind.startswith(word) or kind.startswith(f"Optional[{word}"):
            try:
                return convert(raw)
            except ValueError:
                raise ValueError(f"RAG_{name.upper()} must be {expected}, got {raw!r}") from None
    if "Path" in kind:
        return Path(raw)
    return raw
