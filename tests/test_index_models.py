"""The index remembers its models: unset models come from its ledger, explicit others are refused."""

from __future__ import annotations

import pytest

from rag.config import Settings
from rag.errors import StorageError
from rag.index.core import RagIndex
from rag.index.ingest import ingest
from rag.search.retriever import Retriever


@pytest.fixture
def built(open_test_index, corpus, settings):
    """An index built with the tiny models, closed; its storage folder."""
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    index.close()
    return settings.storage


def test_unset_models_are_the_recorded_ones(built, settings, corpus):
    plain = Settings.from_env({}, storage=built, store=settings.store)  # no RAG_*_MODEL anywhere
    assert plain.text_model == Settings().text_model and not plain.is_explicit("text_model")
    with RagIndex(plain) as index:
        assert (index.settings.text_model, index.settings.image_model) == (settings.text_model, settings.image_model)
        assert index.info()["models"] == {"text": settings.text_model, "image": settings.image_model}
        retriever = Retriever(index)  # loads the recorded models from their folders
        passages = retriever.search("a small domestic animal", top_k=1, image_top_k=0)
        same_photo = retriever.search(image=corpus / "chelsea.png", top_k=0, image_top_k=1)
    assert [h.modality for h in passages] == ["text"]
    assert same_photo[0].file.endswith("chelsea.png")
    assert same_photo[0].signals["clip_image"]["score"] == pytest.approx(1.0, abs=1e-3)  # its cosine similarity


def test_an_explicit_other_model_is_refused_with_the_message_of_today(built, settings):
    from_env = Settings.from_env({"RAG_TEXT_MODEL": "/elsewhere"}, storage=built, store=settings.store)
    for wanted in (from_env, settings.with_overrides(image_model="/other-clip")):
        with pytest.raises(StorageError) as info:
            RagIndex(wanted)
        kind, env, name = (("text", "RAG_TEXT_MODEL", "/elsewhere") if wanted is from_env
                           else ("image", "RAG_IMAGE_MODEL", "/other-clip"))
        recorded = settings.text_model if kind == "text" else settings.image_model
        assert str(info.value) == (
            f"the index in {built} was built with the {kind} model {recorded!r}, but {env} is {name!r}. "
            "Use the same model, or another RAG_STORAGE for a new index.")


def test_an_explicit_same_model_and_a_new_index_are_fine(built, settings, tmp_path):
    same = Settings.from_env({"RAG_TEXT_MODEL": settings.text_model}, storage=built, store=settings.store)
    with RagIndex(same) as index:
        assert index.settings.text_model == settings.text_model
    fresh = Settings.from_env({}, storage=tmp_path / "new", store=settings.store)
    with RagIndex(fresh) as index:  # nothing recorded yet: the configured defaults
        assert index.settings == fresh
        assert index.info()["models"] == {"text": fresh.text_model, "image": fresh.image_model}


def test_info_works_whatever_models_are_configured(built, settings):
    other = Settings.from_env({"RAG_TEXT_MODEL": "/elsewhere", "RAG_IMAGE_MODEL": "/other"}, storage=built,
                              store=settings.store)
    with RagIndex(other, check_models=False) as index:
        info = index.info()
        assert index.settings.text_model == settings.text_model  # the recorded ones, never a mix
    assert info["models"] == {"text": settings.text_model, "image": settings.image_model}
    assert {k: c["points"] for k, c in info["collections"].items()} == {"text": 3, "image": 3}
    assert info["files"] == 6
