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


class ShardSpy:
    """Forwards to a qdrant-edge shard and records the points its queries and scrolls return."""

    def __init__(self, shard):
        self.shard = shard
        self.queried = []  # points returned by query / query_batch
        self.scrolled = []  # records returned by scroll

    def query(self, request):
        points = self.shard.query(request)
        self.queried.extend(points)
        return points

    def query_batch(self, request):
        results = self.shard.query_batch(request)
        for points in results:
            self.queried.extend(points)
        return results

    def scroll(self, request):
        records, offset = self.shard.scroll(request)
        self.scrolled.extend(records)
        return records, offset

    def __getattr__(self, name):
        return getattr(self.shard, name)


def test_the_legs_read_no_payload_and_only_the_hits_are_read(settings, shared_embeddings, corpus):
    """Each leg of a fused search gets ids and scores only; the collections' payloads are read
    once, for the hits (the signal stores' small payloads name the passages' articles)."""
    with RagIndex(settings, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"]) as index:
        ingest(index, [corpus], progress=False)
        retriever = Retriever(index)
        before = retriever.search("the moon", top_k=2, image_top_k=2)
        spies = {"text": ShardSpy(index.stores.text._shard), "image": ShardSpy(index.stores.image._shard),
                 "text signals": ShardSpy(index.signals["text"]._shard),
                 "image signals": ShardSpy(index.signals["image"]._shard)}
        index.stores.text._shard, index.stores.image._shard = spies["text"], spies["image"]
        index.signals["text"]._shard, index.signals["image"]._shard = spies["text signals"], spies["image signals"]
        hits = retriever.search("the moon", top_k=2, image_top_k=2)

    assert [(h.node_id, h.score, h.signals) for h in hits] == [(h.node_id, h.score, h.signals) for h in before]
    assert hits[0].title == "Moon" and {h.modality for h in hits} == {"text", "image"}
    assert {name: len(spy.queried) for name, spy in spies.items()} == {
        "text": 3, "image": 3, "text signals": 1, "image signals": 3}  # every leg ran (BM25: one passage says moon)
    assert [name for name, spy in spies.items() if any(p.payload for p in spy.queried)] == []
    read = {name: sorted(str(r.id) for r in spy.scrolled) for name, spy in spies.items() if spy.scrolled}
    assert read["text"] == sorted(h.node_id for h in hits if h.modality == "text")
    assert read["image"] == sorted(h.node_id for h in hits if h.modality == "image")


def test_eval_pictures_measures_image_to_passages_on_the_sample(tmp_path, minilm_dir, tiny_models):
    """Each sample picture (an altered copy) asks for its article: the article link we ship
    against CLIP text vectors of the passages; with a random CLIP only the first can work."""
    from PIL import Image

    from rag.config import Settings
    from rag.eval.datasets import LabelledSet
    from rag.eval.pictures import article_link_search, clip_text_search, picture_queries
    from rag.eval.runner import evaluate, temporary_index

    settings = Settings(storage=tmp_path / "unused", text_model=str(minilm_dir), image_model=str(tiny_models["image"]))
    with temporary_index(settings, SAMPLE) as index:
        queries = picture_queries(index, SAMPLE, tmp_path / "pictures")
        configs = {"article link": article_link_search(Retriever(index)), "clip text": clip_text_search(index)}
        results = {r.name: r for r in evaluate(LabelledSet("pictures", SAMPLE, queries), configs, depth=10)}
    assert len(queries) == 16  # every sample picture belongs to an article with a passage
    for query in queries:
        picture = query.id[len("picture:"):]
        article = picture.split("/")[-1].rsplit("-", 1)[0]  # images/<article>-<n>.<ext>
        assert query.relevant == {f"text:{article}.md": 1.0, f"image:{picture}": 1.0}
        with Image.open(query.image) as copy, Image.open(SAMPLE / picture) as original:
            cropped = [round(side * 0.9) - round(side * 0.1) for side in original.size]
            assert copy.size == tuple(round(side * 0.75) for side in cropped)
    link, clip = (results[n].means["all"]["text"] for n in ("article link", "clip text"))
    assert link["MRR@10"] >= 0.75 and link["MRR@10"] > clip["MRR@10"] + 0.4


def test_eval_pictures_command_errors(run, corpus):
    result = run("eval", str(corpus), "--pictures", "--compare")
    assert result.exit_code == 2 and "--pictures takes a CORPUS folder, without --questions, --compare or --config" in result.output
    result = run("eval", str(corpus), "--pictures", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["configs"]) == {"article link", "clip text"}
    assert report["queries"] == 1  # coffee.png: the article "coffee" has a passage; the cat and rocket photos no article
    for name in ("coffee.txt", "cat.md", "moon.md"):
        (corpus / name).unlink()
    result = run("eval", str(corpus), "--pictures")
    assert result.exit_code == 2 and "no picture whose article has passages in the index" in result.output


def test_rank_by_cosine_by_hand():
    from rag.eval.pictures import rank_by_cosine

    assert rank_by_cosine([1.0, 0.0], [[0.0, 1.0], [2.0, 0.1], [1.0, 1.0], [3.0, 0.15]]) == [1, 3, 2, 0]
    assert rank_by_cosine([1.0, 0.0], []) == []
