"""Ingestion: both collections fill, re-runs embed nothing, changes replace, bad files are reported."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from rag.index.core import RagIndex
from rag.index.ingest import ingest
from rag.errors import StorageError

from conftest import photo


class CountingEmbedding:
    """Wraps an embedding model to count how many items it embeds."""

    def __init__(self, inner):
        self.inner, self.texts, self.images = inner, 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_text_embedding_batch(self, texts, **kwargs):
        self.texts += len(texts)
        return self.inner.get_text_embedding_batch(texts, **kwargs)

    def embed_image_batch(self, images):
        self.images += len(images)
        return self.inner.embed_image_batch(images)


@pytest.fixture
def counting(settings, shared_embeddings):
    text, image = CountingEmbedding(shared_embeddings["text"]), CountingEmbedding(shared_embeddings["image"])
    opened = []

    def opener():
        index = RagIndex(settings, text_embedding=text, image_embedding=image)
        opened.append(index)
        return index

    yield opener, text, image
    for index in opened:
        index.close()


def test_both_collections_receive_points(open_test_index, corpus):
    index = open_test_index()
    report = ingest(index, [corpus], progress=False)
    assert (report.files_indexed, report.text_nodes, report.image_nodes) == (6, 3, 3)
    assert index.counts() == {"text": 3, "image": 3}
    assert report.points == {"text": 3, "image": 3}
    assert report.ok and report.skipped == []


def test_search_graphs_are_built_once_per_run_that_wrote(open_test_index, corpus, monkeypatch):
    index = open_test_index()
    builds = []
    monkeypatch.setattr(index, "build_search_graphs", lambda: builds.append(index.counts()))
    ingest(index, [corpus], progress=False)
    assert builds == [{"text": 3, "image": 3}]  # once, after every point was written
    (corpus / "notes.txt").write_text("# Notes\n\nA new passage about owls.\n")
    ingest(index, [corpus], progress=False)
    assert builds[1:] == [{"text": 4, "image": 3}]  # and again at the end of the next run


def test_a_run_after_an_interrupted_one_builds_the_graph(open_test_index, corpus):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    if index.stores.kind != "edge":
        pytest.skip("only the embedded qdrant-edge store builds its graph in-process")
    store = index.stores.text
    nodes = store.get_nodes()  # with their embeddings; 600 copies are enough for a graph
    extra = [n.model_copy(update={"id_": f"extra-{i}-{n.node_id}"}) for i in range(200) for n in nodes]
    store.add(extra)  # written, then "killed" before the graph build
    assert store.unindexed() == len(extra) + 3  # the 3 first points: below the engine's 1 KB minimum
    report = ingest(index, [corpus], progress=False)  # nothing changed on disk
    assert report.unchanged == 6 and store.unindexed() == 0


def test_reingesting_an_unchanged_folder_embeds_nothing(counting, corpus):
    opener, text, image = counting
    index = opener()
    ingest(index, [corpus], progress=False)
    first = (text.texts, image.images)
    report = ingest(index, [corpus], progress=False)
    assert first == (3 + 3, 3)  # the text model reads 3 passages and the words of 3 images
    assert (text.texts, image.images) == first
    assert (report.unchanged, report.files_indexed) == (6, 0)
    assert index.counts() == {"text": 3, "image": 3}


def test_reopening_the_index_embeds_nothing_and_keeps_points(counting, corpus, settings):
    opener, text, image = counting
    index = opener()
    ingest(index, [corpus], progress=False)
    index.close()
    reopened = opener()
    report = ingest(reopened, [corpus], progress=False)
    assert report.unchanged == 6 and reopened.counts() == {"text": 3, "image": 3}
    assert (text.texts, image.images) == (3 + 3, 3)  # 3 passages and the words of 3 images, once


def test_a_changed_file_replaces_its_nodes(open_test_index, corpus):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    long_text = "# Cat\n\n" + " ".join(f"Cats sleep a lot, sentence {i}." for i in range(400))
    (corpus / "cat.md").write_text(long_text, encoding="utf-8")
    shutil.copy(photo("astronaut.png"), corpus / "chelsea.png")
    report = ingest(index, [corpus], progress=False)
    assert report.files_indexed == 2 and report.unchanged == 4
    assert report.text_nodes > 1  # the long article became several chunks
    assert index.counts() == {"text": 2 + report.text_nodes, "image": 3}
    hits = index.stores.image.get_nodes(filters=None) if hasattr(index.stores.image, "get_nodes") else []
    assert len({h.metadata["sha256"] for h in hits}) == 3


def test_prune_removes_deleted_files_from_both_collections(open_test_index, corpus):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    (corpus / "coffee.txt").unlink()
    (corpus / "rocket.jpg").unlink()
    report = ingest(index, [corpus], prune=True, progress=False)
    assert report.removed == 2
    assert index.counts() == {"text": 2, "image": 2}
    assert len(index.ledger.files) == 4


def test_without_prune_deleted_files_stay(open_test_index, corpus):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    (corpus / "coffee.txt").unlink()
    report = ingest(index, [corpus], progress=False)
    assert report.removed == 0 and index.counts()["text"] == 3


def test_bad_inputs_are_reported_and_the_rest_is_indexed(open_test_index, corpus, settings):
    (corpus / "zero.png").write_bytes(b"")
    (corpus / "truncated.jpg").write_bytes(photo("rocket.jpg").read_bytes()[:5000])
    (corpus / "corrupt.gif").write_bytes(b"GIF89a" + b"\x00garbage" * 10)
    (corpus / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (corpus / "latin1.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    (corpus / "blank.md").write_text("   \n")
    Image.new("L", (2000, 2000)).save(corpus / "bomb.png")
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(corpus / "cmyk.jpg")
    Image.new("RGBA", (64, 64), (0, 0, 255, 128)).save(corpus / "alpha.png")
    Image.new("RGB", (64, 64), "blue").convert("P").save(corpus / "palette.gif")
    Image.fromarray(__import__("numpy").full((64, 64), 40000, dtype="uint16")).save(corpus / "deep.tiff")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (80, 40), "green").save(corpus / "rotated.jpg", exif=exif)

    index = open_test_index(settings.with_overrides(max_image_pixels=1_000_000))
    report = ingest(index, [corpus], progress=False)
    reasons = {item["path"].rsplit("/", 1)[-1]: item["reason"] for item in report.skipped}
    assert reasons == {
        "zero.png": "empty file (0 bytes)",
        "truncated.jpg": reasons["truncated.jpg"],
        "corrupt.gif": reasons["corrupt.gif"],
        "drawing.svg": "unsupported format (.svg); convert it to PNG or JPEG",
        "latin1.txt": "not UTF-8 text (byte 0xe9 at offset 3); re-save it as UTF-8",
        "blank.md": "empty text file",
        "bomb.png": "2000x2000 pixels is over the limit of 1,000,000 (possible decompression bomb)",
    }
    assert reasons["truncated.jpg"].startswith("corrupt or truncated image")
    assert reasons["corrupt.gif"].startswith(("corrupt or truncated image", "not a recognised image format"))
    assert not report.ok
    # 3 photos + cmyk, alpha, palette, 16-bit and rotated images were normalised and indexed
    assert index.counts() == {"text": 3, "image": 8}


def test_a_file_that_turns_bad_keeps_what_was_indexed(open_test_index, corpus):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    (corpus / "rocket.jpg").write_bytes(b"")
    (corpus / "cat.md").write_bytes(b"\xff\xfe broken")
    report = ingest(index, [corpus], progress=False)
    assert {item["path"].rsplit("/", 1)[-1] for item in report.skipped} == {"rocket.jpg", "cat.md"}
    assert index.counts() == {"text": 3, "image": 3}


def test_manifest_titles_urls_and_captions_reach_the_nodes(open_test_index, corpus):
    import json

    records = [
        {"kind": "article", "path": "cat.md", "title": "Domestic cat", "url": "https://en.wikipedia.org/wiki/Cat"},
        {"kind": "image", "path": "chelsea.png", "title": "Domestic cat", "url": "https://en.wikipedia.org/wiki/Cat",
         "caption": "A tabby cat", "license": "CC0"},
    ]
    (corpus / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    index = open_test_index()
    report = ingest(index, [corpus], progress=False)
    assert report.ignored == 4  # files the manifest does not list
    assert index.counts() == {"text": 1, "image": 1}
    image = index.stores.image.get_nodes()[0]
    assert (image.metadata["title"], image.metadata["caption"], image.metadata["license"]) == ("Domestic cat", "A tabby cat", "CC0")
    assert image.image_path == str((corpus / "chelsea.png").resolve())


def test_opening_with_another_model_is_refused(open_test_index, corpus, settings):
    index = open_test_index()
    ingest(index, [corpus], progress=False)
    index.close()
    with pytest.raises(StorageError, match=r"was built with the text model .* but RAG_TEXT_MODEL is '/elsewhere'"):
        RagIndex(settings.with_overrides(text_model="/elsewhere"))
