"""Faults during `rag ingest`: SIGKILL at several points of a few-hundred-file corpus, then a
re-run must equal a clean build (same counts, same ids, no duplicates); Ctrl-C (SIGINT) gives
one line, exit 130, and an index that a re-run completes; a failing disk write gives a clear
message and loses nothing."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from conftest import photo

# Runs `rag ingest CORPUS` in-process, with commits made small and a fault injected at the
# Nth commit: "kill" (SIGKILL after it), "mid" (SIGKILL between the two collections' writes),
# "int" (SIGINT after it, as Ctrl-C would), "none".
RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    import rag.index.ingest as ingest_module
    from rag.index.core import RagIndex
    from rag.cli import main

    corpus, fault, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Ctrl-C as in a terminal, even when this test runs as a background job (which ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ingest_module.TEXT_GROUP = 16
    ingest_module.IMAGE_GROUP = 4
    state = {"commits": 0}
    original_commit = ingest_module.Ingestor.commit
    original_add = RagIndex.add

    def commit(self, items):
        original_commit(self, items)
        state["commits"] += 1
        if state["commits"] == after and fault in ("kill", "int"):
            os.kill(os.getpid(), signal.SIGKILL if fault == "kill" else signal.SIGINT)

    def add(self, text_nodes, image_nodes):
        if fault == "mid" and state["commits"] + 1 == after and text_nodes and image_nodes is not None:
            self.stores.text.add(list(text_nodes))
            os.kill(os.getpid(), signal.SIGKILL)
        original_add(self, text_nodes, image_nodes)

    ingest_module.Ingestor.commit = commit
    RagIndex.add = add
    main(["ingest", corpus, "--quiet"], prog_name="rag")
    """
)


def make_corpus(root: Path, articles: int, images: int) -> Path:
    root.mkdir(parents=True)
    words = "moon tide coffee cat rocket coin horse astronaut camera hubble".split()
    for i in range(articles):
        body = " ".join(words[(i + k) % len(words)] for k in range(40))
        (root / f"a{i:03d}.md").write_text(f"# Article {i}\n\n{body}. Number {i}.\n", encoding="utf-8")
    base = Image.open(photo("chelsea.png")).convert("RGB")
    for i in range(images):
        base.resize((32 + i, 24 + i)).save(root / f"p{i:03d}.jpg")
    return root


def run(env: dict, corpus: Path, fault: str = "none", after: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, str(corpus), fault, str(after)], env=env,
                          capture_output=True, text=True, timeout=600)


def env_for(settings, storage: Path) -> dict:
    return {**os.environ, "RAG_STORAGE": str(storage), "RAG_TEXT_MODEL": settings.text_model,
            "RAG_IMAGE_MODEL": settings.image_model, "RAG_STORE": settings.store, "RAG_IMAGE_BATCH_SIZE": "4"}


def snapshot(settings, storage: Path) -> dict:
    """Counts, sorted node ids of both collections, and the ledger's files."""
    from rag.index.core import RagIndex

    with RagIndex(settings.with_overrides(storage=storage)) as index:
        text = sorted(n.node_id for n in index.stores.text.get_nodes())
        image = sorted(n.node_id for n in index.stores.image.get_nodes())
        return {"counts": index.counts(), "text": text, "image": image, "files": sorted(index.ledger.files)}


@pytest.mark.slow
def test_killed_many_times_then_rerun_equals_a_clean_build(settings, tmp_path):
    corpus = make_corpus(tmp_path / "corpus", articles=240, images=60)
    clean = tmp_path / "clean"
    assert run(env_for(settings, clean), corpus).returncode == 0
    expected = snapshot(settings, clean)
    assert expected["counts"]["image"] == 60 and len(expected["files"]) == 300

    faulty = tmp_path / "faulty"
    env = env_for(settings, faulty)
    for fault, after in [("kill", 1), ("mid", 2), ("kill", 4), ("mid", 3), ("kill", 9)]:
        result = run(env, corpus, fault, after)
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert run(env, corpus).returncode == 0
    got = snapshot(settings, faulty)
    assert got == expected
    assert len(set(got["text"])) == len(got["text"])


def test_killed_twice_then_rerun_equals_a_clean_build(settings, tmp_path):
    corpus = make_corpus(tmp_path / "corpus", articles=40, images=8)
    clean = tmp_path / "clean"
    assert run(env_for(settings, clean), corpus).returncode == 0
    faulty = tmp_path / "faulty"
    env = env_for(settings, faulty)
    assert run(env, corpus, "kill", 1).returncode == -signal.SIGKILL
    assert run(env, corpus, "mid", 2).returncode == -signal.SIGKILL
    assert run(env, corpus).returncode == 0
    assert snapshot(settings, faulty) == snapshot(settings, clean)


def test_ctrl_c_prints_one_line_exits_130_and_a_rerun_completes(settings, tmp_path):
    corpus = make_corpus(tmp_path / "corpus", articles=40, images=8)
    env = env_for(settings, tmp_path / "storage")
    interrupted = run(env, corpus, "int", 1)
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    assert "Traceback" not in interrupted.stderr
    assert interrupted.stderr.strip().splitlines() == [
        "Interrupted: what was committed is kept; run the same command again to finish."
    ]
    assert run(env, corpus).returncode == 0
    assert snapshot(settings, tmp_path / "storage")["counts"] == {"text": 40, "image": 8}


def test_a_failing_disk_write_gives_a_message_and_loses_nothing(settings, tmp_path, corpus, monkeypatch):
    from click.testing import CliRunner

    from rag.cli import main
    from rag.index import ledger as core

    env = env_for(settings, tmp_path / "storage")
    runner = CliRunner()
    first = runner.invoke(main, ["ingest", str(corpus), "--quiet"], env=env)
    assert first.exit_code == 0, first.output
    before = snapshot(settings, tmp_path / "storage")

    (corpus / "new.md").write_text("# New\n\nA new article about tides.\n", encoding="utf-8")

    def full_disk(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(core.Ledger, "save", full_disk)
    failed = runner.invoke(main, ["ingest", str(corpus), "--quiet"], env=env)
    assert failed.exit_code == 1
    assert "ledger.json: No space left on device" in failed.output
    assert "Traceback" not in failed.output
    monkeypatch.undo()
    after = snapshot(settings, tmp_path / "storage")
    assert after["files"] == before["files"]
    rerun = runner.invoke(main, ["ingest", str(corpus), "--quiet"], env=env)
    assert rerun.exit_code == 0, rerun.output
    assert snapshot(settings, tmp_path / "storage")["counts"]["text"] == before["counts"]["text"] + 1


def test_an_unforeseen_exception_gives_one_line_and_a_saved_traceback(monkeypatch):
    from click.testing import CliRunner

    from rag.cli import main
    from rag.service import RagService

    def broken(self):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(RagService, "info", broken)
    for args in (["info"], ["info", "--json"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1
        assert "Traceback" not in result.output
        message = result.output if args == ["info"] else __import__("json").loads(result.output)["error"]["message"]
        assert "unexpected ZeroDivisionError: division by zero. This is a bug in rag; the traceback is saved in " in message
        saved = Path(message.split("saved in ")[1].split(":")[0])
        assert "Traceback" in saved.read_text() and "broken" in saved.read_text()
        assert saved.stat().st_mode & 0o777 == 0o600
        saved.unlink()
