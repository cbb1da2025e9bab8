"""The `rag` command: JSON shapes, exit codes and the exact error text users see."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rag.cli import main


@pytest.fixture
def run(settings):
    env = {
        "RAG_STORAGE": str(settings.storage),
        "RAG_TEXT_MODEL": settings.text_model,
        "RAG_IMAGE_MODEL": settings.image_model,
        "RAG_STORE": settings.store,
    }

    def invoke(*args):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def test_ingest_json_report_and_exit_status(run, corpus):
    (corpus / "broken.jpg").write_bytes(b"not an image at all")
    result = run("ingest", str(corpus), "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert (report["text_nodes"], report["image_nodes"], report["unchanged"]) == (3, 3, 0)
    assert report["skipped"] == [{"path": str((corpus / "broken.jpg").resolve()),
                                  "reason": "not a recognised image format (corrupt or unsupported)"}]
    assert report["points"] == {"text": 3, "image": 3}
    (corpus / "broken.jpg").unlink()
    again = run("ingest", str(corpus), "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["unchanged"] == 6


def test_search_json_hits(run, corpus):
    run("ingest", str(corpus), "-q")
    result = run("search", "the moon", "--top-k", "2", "--image-top-k", "1", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)  # an object now (was a bare list of hits)
    assert (data["query"], data["image"], data["filters"]) == ("the moon", None, {})
    hits = data["hits"]
    assert sorted(h["modality"] for h in hits) == ["image", "text", "text"]
    for hit in hits:
        assert {"modality", "score", "source", "title", "signals"} <= set(hit)
        assert all(set(v) == {"rank", "score"} for v in hit["signals"].values()) and hit["signals"]
    assert all("text" in h for h in hits if h["modality"] == "text")
    assert all("image_path" in h for h in hits if h["modality"] == "image")
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_search_by_image_with_empty_query(run, corpus):
    run("ingest", str(corpus), "-q")
    result = run("search", "--image", str(corpus / "coffee.png"), "--json")
    hits = json.loads(result.stdout)["hits"]
    images = [h for h in hits if h["modality"] == "image"]
    assert images[0]["image_path"] == str((corpus / "coffee.png").resolve())
    assert images[0]["signals"]["clip_image"]["rank"] == 1
    # passages come through the picture's article: coffee.txt shares the image's title
    assert [h["title"] for h in hits if h["modality"] == "text"] == ["coffee"]
    assert [h for h in hits if h["modality"] == "text"][0]["signals"]["article"]["rank"] == 1


def test_search_with_filter(run, corpus):
    run("ingest", str(corpus), "-q")
    result = run("search", "anything", "--filter", "title=Moon", "--json")
    assert [(h["modality"], h["title"]) for h in json.loads(result.stdout)["hits"]] == [("text", "Moon")]
    bad = run("search", "x", "--filter", "oops")
    assert bad.exit_code == 2 and "'oops' is not KEY=VALUE" in bad.output


def test_search_without_query_or_image_says_what_to_do(run):
    result = run("search")
    assert result.exit_code == 2  # a usage error now (was 1)
    assert result.output.strip().splitlines()[-1] == (
        "Error: nothing to search for: give a text query, an image (--image PATH), or both")


def test_info_json(run, corpus, settings):
    run("ingest", str(corpus), "-q")
    info = json.loads(run("info", "--json").stdout)
    names_and_counts = {k: {f: c[f] for f in ("name", "points")} for k, c in info["collections"].items()}
    assert names_and_counts == {"text": {"name": "text", "points": 3}, "image": {"name": "image", "points": 3}}
    if info["store"] == "edge":  # 3 tiny vectors: under the engine's 1 KB minimum for a graph
        assert [c["unindexed"] for c in info["collections"].values()] == [3, 3]
        assert "3 points (3 outside the HNSW graph, scanned exactly), model" in run("info").stdout
    assert info["models"] == {"text": settings.text_model, "image": settings.image_model}
    assert info["storage"] == str(settings.storage.resolve())
    assert info["files"] == 6


def test_human_output_lists_skipped_files(run, corpus):
    (corpus / "empty.txt").write_text("")
    result = run("ingest", str(corpus), "-q")
    assert result.exit_code == 3
    assert "Indexed 6 files: 3 passages, 3 images" in result.stdout
    assert f"  {(corpus / 'empty.txt').resolve()}: empty text file" in result.stderr


def test_missing_model_is_a_clean_error(run, corpus, tmp_path):
    result = CliRunner().invoke(main, ["ingest", str(corpus), "--text-model", str(tmp_path / "nope"),
                                       "--storage", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot load the text model '{tmp_path / 'nope'}'")


@pytest.mark.parametrize("args", [["info"], ["fetch", "Moon", "--out", "corpus"], ["ask", "Why?"]])
def test_bad_setting_value_is_named(tmp_path, args):
    result = CliRunner().invoke(main, args, env={"RAG_CHUNK_SIZE": "big", "RAG_STORAGE": str(tmp_path)})
    assert result.exit_code == 1
    assert result.output.strip() == "Error: RAG_CHUNK_SIZE must be an integer, got 'big'"


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    for name in ("ingest", "search", "info", "fetch", "ask", "demo"):
        assert f"  {name} " in result.output
