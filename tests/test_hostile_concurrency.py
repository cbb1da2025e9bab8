"""Two processes on one storage folder: the second gets a message naming the holder's pid and
changes nothing; the first completes; the index is then consistent (same as a clean build).

The first `rag ingest` is made to pause after its first commit (until the test says go), so
the second process surely finds the storage held.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_faults import env_for, make_corpus, snapshot

HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import rag.index.ingest as ingest_module
    from rag.cli import main

    corpus, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    ingest_module.TEXT_GROUP = 8
    original_commit = ingest_module.Ingestor.commit

    def commit(self, items):
        original_commit(self, items)
        if not ready.exists():
            ready.write_text(str(os.getpid()))
            deadline = time.time() + 120
            while not go.exists() and time.time() < deadline:
                time.sleep(0.05)

    ingest_module.Ingestor.commit = commit
    main(["ingest", corpus, "--quiet"], prog_name="rag")
    """
)


def rag(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rag", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_second_ingest_and_a_search_meet_the_lock_and_the_first_completes(settings, tmp_path):
    corpus = make_corpus(tmp_path / "corpus", articles=40, images=6)
    other = make_corpus(tmp_path / "other", articles=3, images=0)
    storage = tmp_path / "storage"
    env = env_for(settings, storage)
    ready, go = tmp_path / "ready", tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(corpus), str(ready), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not ready.exists() and holder.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert ready.exists(), holder.communicate()[1]
        held = f"is in use by another process (pid {holder.pid})"

        second = rag(env, "ingest", str(other), "--quiet")
        assert second.returncode == 1
        assert second.stderr.startswith(f"Error: The vector store at {storage.resolve()}/edge/")
        assert held in second.stderr and second.stderr.count("\n") == 1 and "Traceback" not in second.stderr

        search = rag(env, "search", "moon")
        assert search.returncode == 1 and held in search.stderr and "Traceback" not in search.stderr
        info = rag(env, "info", "--json")
        assert info.returncode == 1 and held in info.stdout
    finally:
        go.write_text("go")
        out, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err

    after = snapshot(settings, storage)
    assert after["counts"] == {"text": 40, "image": 6}
    assert len(set(after["text"])) == 40 and len(set(after["image"])) == 6
    assert [Path(f).name for f in after["files"]] == sorted(p.name for p in corpus.iterdir())
    # the refused ingest left nothing behind: a re-run finds every file unchanged
    rerun = rag(env, "ingest", str(corpus), "--json")
    assert rerun.returncode == 0 and '"unchanged": 46' in rerun.stdout
    clean = tmp_path / "clean"
    assert rag(env_for(settings, clean), "ingest", str(corpus), "--quiet").returncode == 0
    built = snapshot(settings, clean)
    assert (after["counts"], after["text"], after["image"]) == (built["counts"], built["text"], built["image"])


@pytest.mark.slow
def test_the_lock_is_released_when_the_holder_is_killed(settings, tmp_path):
    """A SIGKILLed holder leaves a stale pid in .lock, but flock() died with it: the next
    process gets the storage (no lock message), and completes the build."""
    corpus = make_corpus(tmp_path / "corpus", articles=20, images=0)
    env = env_for(settings, tmp_path / "storage")
    ready, go = tmp_path / "ready", tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(corpus), str(ready), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not ready.exists() and holder.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    holder.kill()
    holder.wait(timeout=60)
    assert os.path.exists(tmp_path / "storage" / "edge" / "text" / ".lock")
    result = rag(env, "ingest", str(corpus), "--quiet")
    assert result.returncode == 0, result.stderr
    assert snapshot(settings, tmp_path / "storage")["counts"]["text"] == 20
