"""The fused search end to end: older indexes gain the signals, the CLI explains hits, and the
issue's targets on the sample questions (real MiniLM, random CLIP)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.cli import main
from rag.index.core import RagIndex
from rag.index.ingest import ingest
from rag.index.signals import upgrade_signals
from rag.search.retriever import Retriever

SAMPLE = Path(__file__).resolve().parent.parent / "rag" / "sample"


class Counting:
    """Wraps an embedding model and counts the images it embeds."""

    def __init__(self, inner):
        self.inner = inner
        self.images = 0

    def get_image_embedding_batch(self, paths, **kwargs):
        self.images += len(paths)
        return self.inner.get_image_embedding_batch(paths, **kwargs)

    def get_image_embedding(self, path):
        self.images += 1
        return self.inner.get_image_embedding(path)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_an_older_index_gains_the_signals_without_embedding_an_image(settings, shared_embeddings, corpus):
    with RagIndex(settings, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"]) as index:
        ingest(index, [corpus], progress=False)
    shutil.rmtree(settings.storage / "signals")  # as an index built before the signals existed

    image_model = Counting(shared_embeddings["image"])
    with RagIndex(settings, text_embedding=shared_embeddings["text"], image_embedding=image_model) as index:
        retriever = Retriever(index)
        assert index.needs_signals()
        assert retriever.notes() == [
            f"the index in {settings.storage} was built before lexical and caption signals: searching with "
            f"dense vectors only. Add them (no image is embedded again) with: "
            f"rag migrate --signals --storage {settings.storage}"]
        hits = retriever.search("moon", top_k=3, image_top_k=3)
        assert {name for h in hits for name in h.signals} <= {"dense", "clip"}
        ingest(index, [corpus], progress=False)  # unchanged files: still no signal store
        assert index.needs_signals()

        assert upgrade_signals(index) == {"text": 3, "image": 3}
        assert image_model.images == 0
        assert not index.needs_signals() and retriever.notes() == []
        hits = Retriever(index).search("moon", top_k=3, image_top_k=3)
        moon = next(h for h in hits if h.modality == "text" and h.title == "Moon")
        assert moon.signals["bm25"]["rank"] == 1
        assert any("words" in h.signals for h in hits if h.modality == "image")


def test_migrate_signals_command(settings, shared_embeddings, corpus):
    with RagIndex(settings, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"]) as index:
        ingest(index, [corpus], progress=False)
    shutil.rmtree(settings.storage / "signals")
    env = {"RAG_TEXT_MODEL": settings.text_model, "RAG_IMAGE_MODEL": settings.image_model}
    search = CliRunner().invoke(main, ["search", "moon", "--storage", str(settings.storage)], env=env)
    assert search.exit_code == 0
    assert f"Note: the index in {settings.storage} was built before lexical and caption signals" in search.stderr
    info = CliRunner().invoke(main, ["info", "--storage", str(settings.storage)], env=env).stdout
    assert "Signals:  none (an index built before them): rag migrate --signals adds them" in info
    result = CliRunner().invoke(main, ["migrate", "--signals", "--storage", str(settings.storage)], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"Built the signals of {settings.storage}: 3 passages, 3 images "
                                     "(no image embedded again).")
    search = CliRunner().invoke(main, ["search", "moon", "--storage", str(settings.storage)], env=env)
    assert "Note:" not in search.stderr and "found by: " in search.stdout
    info = CliRunner().invoke(main, ["info", "--storage", str(settings.storage), "--json"], env=env).stdout
    assert json.loads(info)["signals"] == {"text": 3, "image": 3}


@pytest.fixture
def run(settings):
    env = {"RAG_STORAGE": str(settings.storage), "RAG_TEXT_MODEL": settings.text_model,
           "RAG_IMAGE_MODEL": settings.image_model}
    return lambda *args: CliRunner().invoke(main, list(args), env=env)


def test_search_options(run, corpus):
    run("ingest", str(corpus), "-q")
    hits = json.loads(run("search", "the moon", "--limit", "2", "--min-images", "1", "--json").stdout)["hits"]
    assert len(hits) == 2 and [h["modality"] for h in hits].count("image") == 1
    hits = json.loads(run("search", "the moon", "--signals", "dense", "--image-top-k", "0", "--json").stdout)["hits"]
    assert {name for h in hits for name in h["signals"]} == {"dense"}
    bad = run("search", "moon", "--signals", "dense,colour")
    assert bad.exit_code == 1 and "Error: unknown signals colour: expected some of dense, bm25" in bad.output
    bad = run("search", "moon", "--min-images", "4", "--image-top-k", "3")
    assert bad.exit_code == 1 and "Error: --min-images 4 is more than --image-top-k 3" in bad.output
    rrf = json.loads(run("search", "the moon", "--fusion", "rrf", "--json").stdout)["hits"]
    assert [h["score"] for h in rrf] == sorted((h["score"] for h in rrf), reverse=True)


def test_eval_command_on_a_labelled_folder(run, corpus):
    (corpus / "questions.json").write_text(json.dumps([
        {"id": "q1", "question": "The Moon is the natural satellite", "passages": ["moon.md"], "images": []},
        {"id": "q2", "question": "coffee", "passages": ["coffee.txt"], "images": ["coffee.png"]},
    ]))
    result = run("eval", str(corpus), "--compare", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queries"] == 2
    assert set(report["configs"]) == {"dense", "hybrid", "fused", "fused+mmr", "no-captions", "captions"}
    fused = report["configs"]["fused"]
    assert fused["counts"]["all"] == {"fused": 2, "text": 2, "image": 1}
    assert fused["queries"][0]["first_relevant_rank"]["text"] == 1  # the exact sentence: BM25 and dense agree
    table = run("eval", str(corpus), "--config", "dense", "--config", "fused")
    assert table.exit_code == 0
    rows = [line for line in table.stdout.splitlines() if " all (2) " in line]
    assert [row.split()[0] for row in rows] == ["dense", "fused"]
    assert "fused        relevant passage first: 2/2; a relevant image in the top 3: 1/1" in table.stdout
    bad = run("eval", str(corpus), "--config", "best")
    assert bad.exit_code == 2 and "unknown configuration best: expected dense, hybrid, fused" in bad.output
    assert run("eval").exit_code == 2


def test_issue_targets_on_the_sample_questions(tmp_path, minilm_dir, tiny_models):
    """MiniLM for text, a random CLIP: passages first, images in the top 3, fusion beats dense."""
    from rag.config import Settings
    from rag.eval.compare import checks, configurations, search_fn
    from rag.eval.datasets import load_questions
    from rag.eval.runner import evaluate, temporary_index

    settings = Settings(storage=tmp_path / "unused", text_model=str(minilm_dir), image_model=str(tiny_models["image"]))
    data = load_questions(SAMPLE)
    names = ("dense", "fused", "captions")
    with temporary_index(settings, SAMPLE) as index:
        retriever = Retriever(index)
        configs = {n: search_fn(retriever, s) for n, s in configurations().items() if n in names}
        results = {r.name: r for r in evaluate(data, configs, depth=10)}
    fused = checks(results["fused"], data.queries)
    assert fused["passage_first"] == [14, 14]
    found, total = fused["image_in_top3"]
    assert total == 32 and found / total >= 0.9
    hard = {n: results[n].means["hard"]["fused"] for n in names}
    assert hard["fused"]["R@5"] > hard["dense"]["R@5"] and hard["fused"]["MRR@10"] > hard["dense"]["MRR@10"]
    # a useless (random) CLIP does not drag the fused image ranking below the images' words alone
    for group in ("basic", "hard"):
        for metric in ("R@1", "MRR@10"):
            assert results["fused"].means[group]["image"][metric] >= results["captions"].means[group]["image"][metric]
