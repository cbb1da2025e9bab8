"""`rag demo`: the bundled sample is found through the package, the demo builds the default index
with the models every command would choose, and the commands it ends with run as printed."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import rag
from rag.cli import main
from rag.cli.demo import next_commands, rag_command, shown_path
from rag.config import Settings
from rag.demo import demo_questions, first_image, load_demo_models, sample_corpus
from rag.errors import ModelLoadError, RagError
from rag.index.ledger import Ledger
from rag.standins import stand_in_models
from test_standins import chosen_notes, notes_in, recorded_note

ROOT = Path(__file__).resolve().parent.parent
NEXT = "Next: the index in {} is the one these commands use; paste them as they are:"


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


def test_the_demo_uses_the_models_its_index_records_and_says_what_to_do_when_they_cannot_load(tmp_path):
    storage = tmp_path / "storage"
    Ledger(storage / "ledger.json", models={"text": "my/text", "image": "my/image"}).save()
    demo = load_demo_models(Settings.from_env({}, storage=storage), _loaders(set()))
    assert (demo.text, demo.image, demo.notes) == ("my/text", "my/image", [])
    with pytest.raises(ModelLoadError) as err:
        load_demo_models(Settings.from_env({}, storage=storage), _loaders({"my/image"}))
    assert str(err.value) == (
        f"cannot load my/image The index in {storage} was built with this image model (its ledger records it), so "
        "the demo would use it too. To run the demo with offline stand-ins instead, give it a new index: "
        "rag demo --storage storage-demo")
    assert json.loads((storage / "ledger.json").read_text())["models"] == {"text": "my/text", "image": "my/image"}


def _result_lines(stdout: str) -> list:
    return [line for line in stdout.splitlines() if line.startswith("  ") and not line.startswith("  " + rag_command())]


def test_rag_demo_indexes_the_sample_and_shows_every_search(tmp_path, tiny_models):
    storage = tmp_path / "storage"
    options = ["--storage", str(storage), "--text-model", str(tiny_models["text"]),
               "--image-model", str(tiny_models["image"])]
    result = CliRunner().invoke(main, ["demo", *options], env={"RAG_STORE": "edge"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # stderr holds the notes (none here: the models load)
    assert notes_in(result.stderr) == []
    sample = sample_corpus()
    images = len(list((sample / "images").iterdir()))
    files = len([p for p in sample.glob("*.md") if p.name != "README.md"]) + images
    assert re.fullmatch(rf"Indexed {re.escape(str(sample))}: \d+ passages and {images} images in "
                        rf"{re.escape(str(storage))} \({files} new files, 0 unchanged, \d+\.\d s\)\.", lines[0]), lines[0]
    image = shown_path(first_image(sample))
    headers = [line for line in lines if line.startswith("rag search")]
    assert len(headers) == 5 and headers[3] == f"rag search --image {image} --top-k 1"
    results = _result_lines(result.stdout)
    assert len(results) == 16  # 3 questions x 3 hits, the image search's 3 images and its article's passage, 3
    # the labels of `rag search`: passage and image, padded alike
    assert all(re.fullmatch(r"  \d\. \[(passage|image  ) \d\.\d{3}\] \S.*", line) for line in results), results
    # the picture itself first; the fused score no longer is its cosine similarity (1.000)
    assert re.fullmatch(rf"  1\. \[image   \d\.\d{{3}}\] Ancient Greek coins: {re.escape(str(first_image(sample)))}",
                        results[9]), results[9]
    assert any(re.fullmatch(r"  \d\. \[passage \d\.\d{3}\] Ancient Greek coins: .*", line) for line in results[9:13])
    # it ends with commands to go on with, repeating the demo's own options
    questions = demo_questions(sample)
    assert lines[-5] == NEXT.format(storage)
    assert [line[2:] for line in lines[-4:]] == next_commands(rag_command(), questions[0], first_image(sample),
                                                              questions[1], options)
    assert lines[-4] == f"  {rag_command()} search {shlex.quote(questions[0])} {' '.join(options)}"


def test_demo_builds_the_default_index_and_its_next_commands_run_as_printed(tmp_path, monkeypatch, offline_hub,
                                                                             minilm_dir):
    import rag.server.run

    monkeypatch.chdir(tmp_path)
    served = {}
    monkeypatch.setattr(rag.server.run, "serve", lambda settings, config, **kw: served.update(settings=settings, **kw))
    env = {"RAG_STORE": "edge", "RAG_LLM": "none"}
    demo = CliRunner().invoke(main, ["demo"], env=env, catch_exceptions=False)
    assert demo.exit_code == 0, demo.output
    # offline: the same stand-ins and notes as any command; stderr is no terminal, so no progress
    assert notes_in(demo.stderr) == chosen_notes(Path("storage"), minilm_dir)
    assert "\r" not in demo.stdout and "\r" not in demo.stderr and "it/s" not in demo.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["storage"]
    clip = stand_in_models("storage") / "clip-random"
    assert json.loads(Path("storage/ledger.json").read_text())["models"] == {"text": str(minilm_dir), "image": str(clip)}

    lines = demo.stdout.splitlines()
    printed = [line[2:] for line in lines[lines.index(NEXT.format("storage")) + 1:]]
    questions, image = demo_questions(sample_corpus()), first_image(sample_corpus())
    rag_ = rag_command()
    assert printed == [f"{rag_} search {shlex.quote(questions[0])}", f"{rag_} search --image {shlex.quote(str(image))}",
                       f"{rag_} ask {shlex.quote(questions[1])}", f"{rag_} serve   # a search page at http://127.0.0.1:8765/"]
    outputs = []
    for line in printed:
        argv, prefix = shlex.split(line, comments=True), shlex.split(rag_)
        assert argv[:len(prefix)] == prefix
        result = CliRunner().invoke(main, argv[len(prefix):], env=env, catch_exceptions=False)
        assert result.exit_code == 0, (line, result.output)
        assert notes_in(result.stderr) == [recorded_note(Path("storage"))], line
        assert "\r" not in result.stdout and "\r" not in result.stderr
        outputs.append(result.stdout)
    # results from the demo's index, with the models its ledger records (MiniLM: real semantics)
    assert outputs[0].startswith(" 1. [passage ") and "Domestic cat" in outputs[0].splitlines()[0]
    assert outputs[1].startswith(f" 1. [image   ") and outputs[1].splitlines()[0].endswith(str(image))
    assert "Sources:\n  [1] Coffee - https://en.wikipedia.org/wiki/Coffee" in outputs[2]
    assert served["settings"].storage == Path("storage") and not served["settings"].is_explicit("text_model")
    assert DEFAULT_NAMES.isdisjoint(offline_hub[offline_hub.index(str(clip)) + 1:])  # never probed again

    # A second demo finds everything indexed and says the index records stand-ins.
    again = CliRunner().invoke(main, ["demo"], env=env, catch_exceptions=False)
    assert again.exit_code == 0 and notes_in(again.stderr) == [recorded_note(Path("storage"))]
    assert re.search(r"\(0 new files, \d+ unchanged", again.stdout.splitlines()[0]), again.stdout


DEFAULT_NAMES = {Settings().text_model, Settings().image_model}


def test_a_printed_command_runs_in_a_shell_as_printed(tmp_path, monkeypatch, offline_hub):
    monkeypatch.chdir(tmp_path)
    demo = CliRunner().invoke(main, ["demo"], env={"RAG_STORE": "edge"}, catch_exceptions=False)
    assert demo.exit_code == 0, demo.output
    lines = demo.stdout.splitlines()
    search = lines[lines.index(NEXT.format("storage")) + 1][2:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAG_STORE="edge")
    out = subprocess.run(["bash", "-c", search], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(" 1. [passage ") and "Domestic cat" in out.stdout.splitlines()[0]
    assert "\r" not in out.stdout and "\r" not in out.stderr
    assert "the index in storage was built with stand-in models" in out.stderr


def test_the_demo_adds_the_sample_to_an_index_of_other_models(tmp_path, monkeypatch, offline_hub, tiny_models, corpus):
    monkeypatch.chdir(tmp_path)
    env = {"RAG_STORE": "edge"}
    models = ["--text-model", str(tiny_models["text"]), "--image-model", str(tiny_models["image"])]
    first = CliRunner().invoke(main, ["ingest", str(corpus), *models], env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    demo = CliRunner().invoke(main, ["demo"], env=env, catch_exceptions=False)
    assert demo.exit_code == 0, demo.output
    assert notes_in(demo.stderr) == ["note: the index in storage already holds 6 other files; the sample is added to them"]
    assert not Path("storage/stand-in-models").exists() and not DEFAULT_NAMES & set(offline_hub)
    assert json.loads(Path("storage/ledger.json").read_text())["models"] == {"text": str(tiny_models["text"]),
                                                                              "image": str(tiny_models["image"])}
    assert re.search(r"\(\d+ new files, 0 unchanged", demo.stdout.splitlines()[0]), demo.stdout


def test_rag_command_is_the_one_that_works_from_the_users_shell(tmp_path):
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    script, python = bin_dir / "rag", bin_dir / "python"
    script.write_text("#!/bin/sh\n")
    python.write_text("")
    on_path = {"rag": str(script)}
    # `make demo` runs .venv/bin/rag without an activated venv: the rag on PATH (if any) is another one
    assert rag_command(str(script), str(python), lambda name: None, cwd=tmp_path) == ".venv/bin/rag"
    assert rag_command(str(script), str(python), lambda name: "/usr/bin/rag", cwd=tmp_path) == ".venv/bin/rag"
    assert rag_command(str(script), str(python), on_path.get, cwd=tmp_path / "elsewhere") == "rag"
    assert rag_command(str(script), str(python), lambda name: None, cwd=tmp_path / "elsewhere") == str(script)
    # `python -m rag`: the rag beside that python, else python -m rag itself
    assert rag_command("/x/rag/__main__.py", str(python), on_path.get, cwd=tmp_path) == "rag"
    assert rag_command("/x/rag/__main__.py", str(python), lambda name: None, cwd=tmp_path) == ".venv/bin/rag"
    script.unlink()
    assert rag_command("/x/rag/__main__.py", str(python), on_path.get, cwd=tmp_path) == ".venv/bin/python -m rag"
    spaced = tmp_path / "my dir" / "python"
    assert rag_command("-c", str(spaced), on_path.get, cwd=tmp_path) == "'my dir/python' -m rag"


def test_the_demo_does_not_write_to_an_index_a_server_owns(tmp_path, monkeypatch, offline_hub):
    monkeypatch.chdir(tmp_path)
    owner = subprocess.Popen(["sleep", "60"])
    try:
        Path("storage").mkdir()
        Path("storage/server.json").write_text(json.dumps({"pid": owner.pid, "url": "http://127.0.0.1:9"}))
        result = CliRunner().invoke(main, ["demo"], env={"RAG_STORE": "edge"})
    finally:
        owner.kill()
        owner.wait()
    assert result.exit_code == 1
    assert result.stderr == (f"Error: a rag server already owns storage: pid {owner.pid} at http://127.0.0.1:9. Use it "
                             f"(rag commands and RagService go through it), or stop it first (kill {owner.pid}).\n")
    assert offline_hub == [] and sorted(p.name for p in Path("storage").iterdir()) == ["server.json"]
