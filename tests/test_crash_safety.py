"""A process killed (SIGKILL) in the middle of an ingest leaves an index that opens, and the
same ingest run again completes it with no duplicates and nothing lost. A second process
that opens the storage while one writes gets a clear message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from rag.index.core import RagIndex
from rag.index.ingest import ingest

from conftest import photo

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import rag.index.ingest as ingest_module
    from rag.config import Settings
    from rag.index.core import RagIndex

    storage, text_model, image_model, corpus, mode, after = sys.argv[1:7]
    after = int(after)
    ingest_module.TEXT_GROUP = 3  # many small commits
    settings = Settings(storage=Path(storage), text_model=text_model, image_model=image_model, image_batch_size=2)
    commits = 0
    original_commit = ingest_module.Ingestor.commit
    original_add = RagIndex.add

    def commit(self, items):
        global commits
        original_commit(self, items)
        commits += 1
        if mode == "after-commit" and commits == after:
            os.kill(os.getpid(), signal.SIGKILL)

    def add(self, text_nodes, image_nodes):
        # die between the two collections' writes, before the ledger knows about them
        if mode == "mid-commit" and commits == after:
            self.stores.text.add(list(text_nodes)) if text_nodes else None
            os.kill(os.getpid(), signal.SIGKILL)
        original_add(self, text_nodes, image_nodes)

    ingest_module.Ingestor.commit = commit
    RagIndex.add = add
    with RagIndex(settings) as index:
        ingest_module.ingest(index, [Path(corpus)], progress=False)
    print("finished without being killed")
    """
)


@pytest.fixture
def big_corpus(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    for i in range(12):
        (root / f"article{i:02d}.md").write_text(f"# Article {i}\n\nThe moon and the cat number {i}.\n", encoding="utf-8")
    base = Image.open(photo("chelsea.png")).convert("RGB")
    for i in range(8):
        base.resize((64 + 8 * i, 48 + 4 * i)).save(root / f"photo{i}.jpg")
    return root


def run_killer(settings, corpus, mode, after):
    return subprocess.run(
        [sys.executable, "-c", KILLER, str(settings.storage), settings.text_model, settings.image_model,
         str(corpus), mode, str(after)],
        capture_output=True, text=True, timeout=300,
    )


def all_ids(index):
    return [n.node_id for n in index.stores.text.get_nodes()] + [n.node_id for n in index.stores.image.get_nodes()]


@pytest.mark.parametrize("mode,after", [("after-commit", 2), ("mid-commit", 1), ("after-commit", 5)])
def test_killed_ingest_resumes_without_duplicates_or_losses(settings, shared_embeddings, big_corpus, mode, after):
    result = run_killer(settings, big_corpus, mode, after)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]

    with RagIndex(settings, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"]) as index:
        partial = index.counts()
        assert partial["text"] + partial["image"] < 20
        report = ingest(index, [big_corpus], progress=False)
        assert report.ok and report.unchanged + report.files_indexed == 20
        assert report.unchanged > 0  # what was committed before the kill is not embedded again
        assert index.counts() == {"text": 12, "image": 8}
        ids = all_ids(index)
        assert len(ids) == len(set(ids)) == 20
        assert len(index.ledger.files) == 20


def test_a_second_process_gets_a_clear_message_while_one_writes(settings, shared_embeddings, corpus):
    with RagIndex(settings, text_embedding=shared_embeddings["text"], image_embedding=shared_embeddings["image"]) as index:
        ingest(index, [corpus], progress=False)
        env = {**os.environ, "RAG_STORAGE": str(settings.storage), "RAG_TEXT_MODEL": settings.text_model,
               "RAG_IMAGE_MODEL": settings.image_model, "RAG_STORE": settings.store}
        other = subprocess.run([sys.executable, "-m", "rag.cli", "info"], env=env, capture_output=True, text=True,
                               timeout=120)
    assert other.returncode == 1
    assert other.stderr.startswith("Error: ")
    assert str(settings.storage) in other.stderr and "another process" in other.stderr
    # and once the first has finished, the second opens the same index fine
    after = subprocess.run([sys.executable, "-m", "rag.cli", "info", "--json"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert after.returncode == 0 and '"points": 3' in after.stdout
