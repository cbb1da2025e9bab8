"""The bundled sample corpus: well-formed, fully indexed, and its questions find their articles."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rag.media.images import open_image
from rag.corpus.manifest import read_manifest
from rag.demo import sample_corpus
from rag.index.core import RagIndex
from rag.index.ingest import ingest
from rag.search.retriever import Retriever

SAMPLE = sample_corpus()


def test_manifest_describes_every_article_and_image():
    records = read_manifest(SAMPLE)
    articles = [r for r in records.values() if r["kind"] == "article"]
    images = [r for r in records.values() if r["kind"] == "image"]
    assert len(articles) >= 12 and len(images) >= len(articles)
    for path, record in records.items():
        assert path.is_file(), path
        assert record["title"] and record["url"].startswith("https://en.wikipedia.org/wiki/")
        if record["kind"] == "image":
            assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
            assert record["caption"] and record["license"] and record["origin"]
            assert open_image(path).size == (record["width"], record["height"])
    assert {r["title"] for r in images} == {r["title"] for r in articles}


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory, minilm_dir, tiny_models):
    from rag.config import Settings

    settings = Settings(storage=tmp_path_factory.mktemp("sample") / "storage", text_model=str(minilm_dir),
                        image_model=str(tiny_models["image"]))
    index = RagIndex(settings)
    report = ingest(index, [SAMPLE], progress=False)
    yield index, report
    index.close()


def test_whole_sample_is_indexed_with_titles_and_urls(sample_index):
    index, report = sample_index
    articles = sum(1 for p in SAMPLE.glob("*.md") if p.name != "README.md")
    assert report.ok and report.ignored == 2  # README.md and questions.json
    assert report.files_indexed == articles + len(list((SAMPLE / "images").iterdir()))
    assert index.counts()["image"] == len(list((SAMPLE / "images").iterdir()))
    assert index.counts()["text"] >= articles
    hit = Retriever(index).search("astronaut", top_k=1, image_top_k=1, filters={"title": "Eileen Collins"})
    assert [(h.modality, h.url) for h in hit] == [(m, "https://en.wikipedia.org/wiki/Eileen_Collins") for m in ("text", "image")]
    assert hit[1].text.startswith("NASA portrait of astronaut Eileen Collins")


def test_every_sample_question_ranks_its_article_first(sample_index):
    index, _ = sample_index
    retriever = Retriever(index)
    questions = [q for q in json.loads((SAMPLE / "questions.json").read_text(encoding="utf-8"))
                 if q["set"] == "basic"]
    assert len(questions) == 14
    misses = []
    for item in questions:
        top = retriever.search(item["question"], top_k=1, image_top_k=0)[0]
        if Path(top.file).name != item["expected_path"]:
            misses.append((item["question"], Path(top.file).name))
    assert misses == []
