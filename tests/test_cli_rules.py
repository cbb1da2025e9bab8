"""The rules every `rag` command follows: exit codes, JSON shapes (errors included), labels,
plurals, `python -m rag`, progress never on stdout, common options everywhere."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.cli import main
from rag.cli.common import plural, show_progress, snippet

ROOT = Path(__file__).resolve().parent.parent
SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
OWN_COMMANDS = ("search", "ask", "info", "ingest", "migrate")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_models):
    """One small corpus (a passage with a `##` heading, a photo, an ignored file), indexed once."""
    root = tmp_path_factory.mktemp("cli-rules")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "cat.md").write_text("# Cat\n\n## Habits\n\nThe cat is a small domestic animal that purrs.\n",
                                   encoding="utf-8")
    (corpus / "notes.docx").write_bytes(b"not an article")
    shutil.copy(SKIMAGE_DATA / "chelsea.png", corpus / "chelsea.png")
    env = {"RAG_STORAGE": str(root / "storage"), "RAG_TEXT_MODEL": str(tiny_models["text"]),
           "RAG_IMAGE_MODEL": str(tiny_models["image"]), "RAG_STORE": os.environ.get("RAG_TEST_STORE", "edge"),
           "RAG_LLM": "none"}
    first = CliRunner().invoke(main, ["ingest", str(corpus), "--verbose"], env=env, catch_exceptions=False)
    return {"root": root, "corpus": corpus, "env": env, "first": first}


@pytest.fixture
def run(indexed):
    def invoke(*args, **env):
        return CliRunner().invoke(main, list(args), prog_name="rag", env={**indexed["env"], **env},
                                  catch_exceptions=False)

    return invoke


# -------------------------------------------------------------------------- human output


def test_ingest_report_uses_singulars_and_names_ignored_files(indexed):
    first = indexed["first"]
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[0].startswith("Indexed 2 files: 1 passage, 1 image (0 unchanged, 0 removed, 1 ignored) in ")
    assert lines[1:] == ["Collections now hold 1 passage and 1 image.",
                         "1 file ignored:", f"  {indexed['corpus'] / 'notes.docx'}"]


def test_ingest_json_report_lists_ignored_files(run, indexed):
    result = run("ingest", str(indexed["corpus"]), "--json")
    report = json.loads(result.stdout)
    assert (report["unchanged"], report["ignored"]) == (2, 1)
    assert report["ignored_files"] == [str(indexed["corpus"] / "notes.docx")]


def test_skipped_files_are_counted_in_the_singular(run, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    result = run("ingest", str(tmp_path / "empty.txt"), "--storage", str(tmp_path / "s"))
    assert result.exit_code == 3
    assert result.stdout.startswith("Indexed 0 files: 0 passages, 0 images (")
    assert result.stderr == f"1 file skipped:\n  {(tmp_path / 'empty.txt').resolve()}: empty text file\n"


def test_search_labels_hits_passage_and_image_and_strips_heading_markers(run, indexed):
    result = run("search", "a cat")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith(" 1. [passage 0.") and lines[0].endswith(f"] Cat  <{indexed['corpus'] / 'cat.md'}>")
    assert lines[1] == "      Habits The cat is a small domestic animal that purrs."
    assert lines[2].startswith("      found by: dense #1 (")  # each hit then says which signals found it
    assert lines[3].startswith(" 2. [image   ") and lines[3].endswith(f"] chelsea: {indexed['corpus'] / 'chelsea.png'}")
    assert "[text" not in result.stdout


def test_info_counts_in_the_singular(run):
    lines = run("info").stdout.splitlines()
    assert lines[1].startswith("Text      collection 'text': 1 point")
    assert lines[2].startswith("Image     collection 'image': 1 point")


def test_pure_helpers():
    assert [plural(n, "passage") for n in (0, 1, 2)] == ["0 passages", "1 passage", "2 passages"]
    assert plural(1, "file") + ", " + plural(3, "file") == "1 file, 3 files"
    assert snippet("# Cat\n\n## Habits\nThe cat #1 purrs.\n###\n####### not a heading") == \
        "Cat Habits The cat #1 purrs. ####### not a heading"
    assert snippet("x" * 300, limit=10) == "x" * 10 + "…"


# -------------------------------------------------------------------------- no hits


def test_a_filter_that_matches_nothing_is_named(run):
    result = run("search", "a cat", "--filter", "nosuch=1")
    assert (result.exit_code, result.stdout) == (0, "No hits match the filter nosuch=1.\n")
    result = run("search", "a cat", "--filter", "title=Cat", "--filter", "nosuch=1")
    assert result.stdout == "No hits match the filter nosuch=1.\n"
    result = run("search", "a cat", "--filter", "title=Cat", "--filter", "modality=image")
    assert result.stdout == "No hits match all of the filters title=Cat, modality=image together.\n"


def test_an_empty_index_says_so(run, tmp_path):
    result = run("search", "a cat", "--storage", str(tmp_path / "empty"))
    assert result.exit_code == 0
    assert result.stdout == f"No results: the index in {tmp_path / 'empty'} is empty (run `rag ingest PATH` first).\n"


# -------------------------------------------------------------------------- JSON shapes


def test_search_json_is_one_object(run, indexed):
    data = json.loads(run("search", "a cat", "--top-k", "1", "--image-top-k", "1", "--filter", "title=Cat",
                          "--json").stdout)
    assert list(data) == ["query", "image", "filters", "hits"]
    assert (data["query"], data["image"], data["filters"]) == ("a cat", None, {"title": "Cat"})
    assert [(h["modality"], h["title"]) for h in data["hits"]] == [("text", "Cat")]
    empty = json.loads(run("search", "a cat", "--filter", "nosuch=1", "--json").stdout)
    assert empty == {"query": "a cat", "image": None, "filters": {"nosuch": "1"}, "hits": []}


def test_ask_takes_the_common_options_and_filter(run, indexed, tmp_path):
    result = run("ask", "What purrs?", "--filter", "title=Cat", "--json",
                 "--storage", indexed["env"]["RAG_STORAGE"], RAG_STORAGE=str(tmp_path / "elsewhere"))
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["answer"] is None
    assert [(s["n"], s["modality"], s["title"]) for s in answer["sources"]] == [(1, "text", "Cat")]
    other = run("ask", "What purrs?", "--json", "--text-model", str(tmp_path / "nope"))
    assert other.exit_code == 1
    error = json.loads(other.stdout)["error"]
    assert error["type"] == "StorageError" and f"but RAG_TEXT_MODEL is '{tmp_path / 'nope'}'" in error["message"]


@pytest.mark.parametrize("command", OWN_COMMANDS)
def test_every_command_takes_the_common_options(command):
    params = {p.name for p in main.commands[command].params}
    assert {"storage", "text_model", "image_model", "as_json"} <= params
    if command in ("search", "ask"):
        assert "filters" in params


# -------------------------------------------------------------------------- errors and exit codes


def test_usage_errors_exit_2(run, tmp_path):
    cases = {
        ("search",): "Error: nothing to search for: give a text query, an image (--image PATH), or both",
        ("ingest", "/nonexistent"): "Error: Invalid value for 'PATHS...': Path '/nonexistent' does not exist.",
        ("search", "--image", str(tmp_path / "nope.jpg")):
            f"Error: Invalid value for '--image': File '{tmp_path / 'nope.jpg'}' does not exist.",
        ("search", "x", "--filter", "oops"): "Error: Invalid value for '--filter': 'oops' is not KEY=VALUE",
        ("ask", ""): "Error: nothing to ask: give a QUESTION, an image (--image PATH), or both",
    }
    for args, message in cases.items():
        result = run(*args)
        assert result.exit_code == 2, args
        assert result.stdout == ""
        assert result.stderr.startswith("Usage: rag ")
        assert result.stderr.rstrip("\n").splitlines()[-1] == message


@pytest.mark.parametrize("args, code, kind, message", [
    (["search", "--json"], 2, "UsageError",
     "nothing to search for: give a text query, an image (--image PATH), or both"),
    (["ingest", "/nonexistent", "--json"], 2, "UsageError",
     "Invalid value for 'PATHS...': Path '/nonexistent' does not exist."),
    (["info", "--json"], 1, "SettingsError", "RAG_CHUNK_SIZE must be an integer, got 'big'"),
    (["migrate", "--json"], 1, "StorageError", "{storage} has no qdrant-client local index (no {storage}/qdrant "
                                               "folder) to migrate"),
])
def test_errors_are_json_with_json(run, tmp_path, args, code, kind, message):
    storage = tmp_path / "s"
    env = {"RAG_STORAGE": str(storage)}
    if kind == "SettingsError":
        env["RAG_CHUNK_SIZE"] = "big"
    result = run(*args, **env)
    assert result.exit_code == code
    assert json.loads(result.stdout) == {"error": {"message": message.format(storage=storage), "type": kind}}
    assert result.stderr == ""


def test_errors_stay_plain_text_without_json(run, tmp_path):
    result = run("migrate", "--storage", str(tmp_path))
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path} has no qdrant-client local index (no {tmp_path}/qdrant folder) to migrate\n"


# -------------------------------------------------------------------------- process level


def _python_m_rag(args, env_extra, **kwargs):
    env = {**os.environ, **env_extra, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "rag", *args], env=env, capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_python_m_rag_is_the_rag_command(indexed):
    help_ = _python_m_rag(["--help"], {})
    assert help_.returncode == 0 and help_.stdout.startswith("Usage: rag [OPTIONS] COMMAND [ARGS]...")
    usage = _python_m_rag(["search"], {})
    assert usage.returncode == 2 and usage.stderr.startswith("Usage: rag search [OPTIONS] [QUERY]")


def test_progress_never_reaches_stdout_and_is_off_when_piped(indexed, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(indexed["corpus"], corpus)
    result = _python_m_rag(["ingest", str(corpus)], {**indexed["env"], "RAG_STORAGE": str(tmp_path / "s")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Indexed 2 files: 1 passage, 1 image")
    assert "\r" not in result.stdout and "\r" not in result.stderr
    assert "it/s" not in result.stderr and "item/s" not in result.stderr


def test_progress_only_for_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert show_progress() is False
    monkeypatch.setattr(sys, "stderr", Tty())
    assert show_progress() is True
    assert show_progress(quiet=True) is False and show_progress(as_json=True) is False


def test_shell_completion_script():
    result = CliRunner().invoke(main, [], prog_name="rag", env={"_RAG_COMPLETE": "bash_source"})
    assert result.exit_code == 0
    assert "_rag_completion" in result.output and "complete " in result.output
