"""The notebooks run top to bottom, offline, so they never rot.

Each notebook under notebooks/ is executed with nbclient in a fresh kernel (the ipykernel of
the interpreter running pytest, so the project's .venv), in order, against one temporary
index: tiny random BERT and CLIP models (RAG_TEXT_MODEL, RAG_IMAGE_MODEL), RAG_STORAGE in a
temp folder, the bundled sample corpus, and for 03_ask an OpenAI-compatible stand-in server
on 127.0.0.1 (tests/llm_stub.py) named by RAG_LLM_BASE_URL. Any failing cell fails the test.

    python -m pytest -m notebooks tests/test_notebooks.py

Committed notebooks carry no outputs and no execution counts (checked below); executed
copies are written to the pytest temp folder for inspection.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
SAMPLE = ROOT / "rag" / "sample"
STRIP = (".venv/bin/jupyter nbconvert --clear-output --inplace --ClearMetadataPreprocessor.enabled=True "
         "--ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec notebooks/*.ipynb")
CELL_TIMEOUT = 300  # seconds per cell; the whole run takes well under a minute with tiny models


def _ids(paths):
    return [p.stem for p in paths]


def _require(module: str):
    """Import a dev dependency; missing, the notebooks would rot unnoticed, so fail (not skip)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{module} is not installed: the notebook tests need nbclient, nbformat and ipykernel "
                    "(pip install -e '.[dev]')")


# --------------------------------------------------------------------------- committed state


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_build_index.ipynb", "02_search.ipynb", "03_ask.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_is_clean(path):
    """No outputs, no execution counts, valid nbformat 4, the python3 kernel."""
    nbformat = _require("nbformat")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; strip them with: {STRIP}"
    for i, cell in enumerate(nb.cells):
        noisy = set(cell.get("metadata", {})) & {"execution", "collapsed", "scrolled", "jupyter"}
        assert not noisy, f"{path.name}: cell {i} carries run metadata {sorted(noisy)}; strip it with: {STRIP}"
    assert "widgets" not in nb.metadata, f"{path.name} carries widget state; strip it with: {STRIP}"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert not any(c.get("attachments") for c in nb.cells)


# --------------------------------------------------------------------------- execution


def _load_stub():
    """tests/llm_stub.py by path (works whatever pytest's import mode)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rag_tests_llm_stub", Path(__file__).with_name("llm_stub.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LLMStub


def _kernelspec(root: Path) -> Path:
    """A `python3` kernelspec that launches this very interpreter (first on JUPYTER_PATH),
    so a user-wide python3 kernel of another Python can never be picked instead."""
    folder = root / "kernels" / "python3"
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (rag tests)",
        "language": "python",
        "metadata": {"debugger": False},
    }), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory, tiny_models):
    """The environment the kernels get, the stand-in LLM server, and where executed copies go."""
    for module in ("nbclient", "nbformat", "ipykernel"):
        _require(module)
    LLMStub = _load_stub()

    tmp = tmp_path_factory.mktemp("notebooks")
    assert (SAMPLE / "manifest.jsonl").is_file(), f"the bundled sample corpus is missing: {SAMPLE}"
    jupyter = _kernelspec(tmp / "jupyter")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}  # hermetic: no user settings
    env.update({
        "RAG_STORAGE": str(tmp / "storage"),
        "RAG_TEXT_MODEL": str(tiny_models["text"]),
        "RAG_IMAGE_MODEL": str(tiny_models["image"]),
        "RAG_NOTEBOOK_CORPUS": str(SAMPLE),  # the default; set so that a user's own value cannot leak in
        "RAG_NOTEBOOK_FETCH": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "JUPYTER_PATH": str(jupyter),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(tmp / "ipython"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    })
    if os.environ.get("RAG_TEST_STORE"):
        env["RAG_STORE"] = os.environ["RAG_TEST_STORE"]
    with LLMStub() as stub, pytest.MonkeyPatch.context() as mp:
        env.update(stub.env())
        # This process resolves the kernelspec and writes the connection files.
        mp.setenv("JUPYTER_PATH", str(jupyter))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(tmp / "runtime"))
        yield {"env": env, "stub": stub, "out": tmp / "executed"}


def execute(path: Path, env: dict, out: Path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},  # cwd: notebooks/, as in Jupyter
    )
    try:
        client.execute(env=env)
    finally:
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    return nb


def html_outputs(nb) -> str:
    return "\n".join(
        output.get("data", {}).get("text/html", "")
        for cell in nb.cells if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def text_outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, notebook_run):
    """Every cell runs without error (nbclient raises CellExecutionError with the traceback)."""
    before = len(notebook_run["stub"].chat_requests())
    nb = execute(path, notebook_run["env"], notebook_run["out"])
    html = html_outputs(nb)
    assert 'class="rag-view"' in html, f"{path.name} rendered no rag.display.html view"
    assert "data:image/" in html, f"{path.name} showed no image"
    if path.stem.startswith("01"):
        assert "<td>text</td>" in html and "<td>image</td>" in html  # the collection summary
    if path.stem.startswith("03"):
        asked = notebook_run["stub"].chat_requests()[before:]
        assert len(asked) >= 3, "03_ask did not call the stand-in LLM server (ask, stream, query)"
        assert any(m.get("content") and isinstance(m["content"], list)
                   and any(p.get("type") == "image_url" for p in m["content"])
                   for m in asked[0]["json"]["messages"]), "no image reached the LLM"
        assert "No LLM was called" in html  # the RAG_LLM=none part
        assert "This is a stand-in answer" in html and 'href="#rag-src-' in html  # answer with [n] links
