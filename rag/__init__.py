"""Multimodal retrieval and RAG over articles with pictures.

    from rag import RagService, Settings, Hit, Answer, IngestReport

The names below are resolved on first use (PEP 562 module `__getattr__`), so `import rag`
stays cheap: torch, transformers and LlamaIndex load only when a model or an index does.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Tuple

__version__ = "0.1.0"

# Public name -> the modules that may define it, tried in order (the first that has it wins),
# so a type can move to a lower layer without breaking `from rag import ...`.
_EXPORTS: Dict[str, Tuple[str, ...]] = {
    "RagService": ("rag.service",),
    "Settings": ("rag.config",),
    "Hit": ("rag.types",),
    "SearchRequest": ("rag.types",),
    "SearchResult": ("rag.types",),
    "AskRequest": ("rag.types",),
    "IngestReport": ("rag.types",),
    "Answer": ("rag.types", "rag.answer.engine"),
    "RagError": ("rag.errors",),
    "BadInputError": ("rag.errors",),
    "ModelLoadError": ("rag.errors",),
    "StorageError": ("rag.errors",),
}

__all__ = ["__version__", *_EXPORTS]


def _resolve(name: str) -> Any:
    """The object `rag.<name>` stands for, imported from the first module that defines it."""
    for module_name in _EXPORTS[name]:
        value = getattr(importlib.import_module(module_name), name, None)
        if value is not None:
            return value
    raise AttributeError(f"module 'rag' cannot find {name!r} in {', '.join(_EXPORTS[name])}")


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    value = _resolve(name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_EXPORTS))
