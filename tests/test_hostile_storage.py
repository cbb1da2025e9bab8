"""Storage files truncated, deleted or overwritten with garbage; a storage path that is a file.

Each damage gives one `Error:` line naming the damaged file or folder and how to recover
(move the index folder aside and re-ingest: there is no second copy to repair from), never a
traceback; damage that the engine repairs from its write-ahead log is simply repaired.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.cli import main

RECOVER = "run `rag ingest` on your folders again to rebuild it"


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_models):
    """One small index, built once; each test damages a copy of it."""
    root = tmp_path_factory.mktemp("built")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in {"cat.md": "# Cat\n\nThe cat purrs.\n", "moon.md": "# Moon\n\nThe Moon orbits.\n"}.items():
        (corpus / name).write_text(text, encoding="utf-8")
    shutil.copy(Path(__import__("skimage").__file__).parent / "data" / "chelsea.png", corpus / "chelsea.png")
    env = {"RAG_STORAGE": str(root / "storage"), "RAG_TEXT_MODEL": str(tiny_models["text"]),
           "RAG_IMAGE_MODEL": str(tiny_models["image"]), "RAG_STORE": "edge"}
    result = CliRunner().invoke(main, ["ingest", str(corpus), "-q"], env=env)
    assert result.exit_code == 0, result.output
    return root / "storage", env


@pytest.fixture
def damaged(built, tmp_path):
    """(storage copy, env for it)."""
    source, env = built
    storage = tmp_path / "storage"
    shutil.copytree(source, storage)
    return storage, {**env, "RAG_STORAGE": str(storage)}


def segment_files(storage: Path, name: str) -> list:
    found = sorted(glob.glob(str(storage / "edge" / "text" / "shard" / "segments" / "*" / name)))
    assert found, name
    return found


def _garbage(path: str, size: int = 0) -> None:
    Path(path).write_bytes(os.urandom(size or max(Path(path).stat().st_size, 64)))


# name -> (damage, the file or folder the message names (relative to storage), what else it says)
DAMAGE = {
    "ledger truncated": (lambda s: (s / "ledger.json").write_bytes((s / "ledger.json").read_bytes()[:40]),
                         "ledger.json", "the ledger is damaged"),
    "ledger garbage": (lambda s: (s / "ledger.json").write_bytes(b"\xff\xfe\x00garbage\x81"),
                       "ledger.json", "the ledger is damaged"),
    "ledger a list": (lambda s: (s / "ledger.json").write_text("[1, 2]"), "ledger.json", "a JSON list, not an object"),
    "ledger bad entry": (lambda s: (s / "ledger.json").write_text('{"files": {"a": {"x": 1}}}'),
                         "ledger.json", "the ledger is damaged"),
    "sidecar garbage": (lambda s: (s / "edge/text/rag_store.json").write_bytes(b"\x00garbage"),
                        "edge/text/rag_store.json", "The store directory is damaged"),
    "sidecar a list": (lambda s: (s / "edge/text/rag_store.json").write_text("[]"),
                       "edge/text/rag_store.json", "not a JSON object"),
    "engine config garbage": (lambda s: (s / "edge/text/shard/edge_config.json").write_text("garbage"),
                              "edge/text/shard", "is damaged (cannot open it"),
    "wal garbage": (lambda s: [_garbage(p, 4096) for p in glob.glob(str(s / "edge/text/shard/wal/open-*"))],
                    "edge/text/shard", "is damaged (cannot open it"),
    "wal index garbage": (lambda s: (s / "edge/text/shard/wal/first-index").write_bytes(b"\x01\x02garbage"),
                          "edge/text/shard", "is damaged (cannot open it"),
    "segment state garbage": (lambda s: [Path(p).write_text("garbage") for p in segment_files(s, "segment.json")],
                              "edge/text/shard", "is damaged (cannot open it"),
    "segment version garbage": (lambda s: [Path(p).write_text("zz") for p in segment_files(s, "version.info")],
                                "edge/text/shard", "is damaged (cannot open it"),
    "collection folder deleted": (lambda s: shutil.rmtree(s / "edge/text"),
                                  "ledger.json", "the text collection at"),
}


def _expect_message(output: str, storage: Path, where: str, says: str) -> None:
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert lines[-1].startswith("Error: "), output
    message = lines[-1]
    assert str(storage / where) in message and says in message, message
    assert RECOVER in message, message


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damage_gives_one_line_naming_the_file(damaged, case):
    storage, env = damaged
    damage, where, says = DAMAGE[case]
    damage(storage)
    for args in (["search", "cat"], ["info"], ["ingest", str(storage.parent / "nothing-here")]):
        if args[0] == "ingest":
            (storage.parent / "nothing-here").mkdir(exist_ok=True)
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 1, (args, result.output)
        _expect_message(result.output, storage, where, says)


class Panic(BaseException):
    """What a Rust panic inside the engine raises (pyo3's PanicException is a BaseException)."""


def test_engine_panic_while_opening(damaged, monkeypatch):
    import rag.stores.edge as edge

    storage, env = damaged

    def panics(*args, **kwargs):
        raise Panic("capacity overflow")

    monkeypatch.setattr(edge.qe.EdgeShard, "load", panics)
    result = CliRunner().invoke(main, ["search", "cat"], env=env)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: The vector store at {storage}/edge/text/shard is damaged (cannot open it: capacity overflow). "
        "To recover, move the index folder (RAG_STORAGE) aside and run `rag ingest` on your folders again to "
        "rebuild it; rag keeps no second copy to repair it from.\n")


@pytest.mark.parametrize("fault", ["engine", "payload"])
def test_damage_found_at_read_time(damaged, monkeypatch, fault):
    import json

    import rag.stores.edge as edge

    storage, env = damaged
    if fault == "engine":
        real = edge.QdrantEdgeVectorStore._live_shard

        class Broken:
            def __init__(self, shard):
                self.shard = shard

            def __getattr__(self, name):
                return getattr(self.shard, name)

            def query(self, request):
                raise Exception("Service runtime error: Failed to decode value: LZ4")

        monkeypatch.setattr(edge.QdrantEdgeVectorStore, "_live_shard", lambda self: Broken(real(self)))
        detail = "a read failed: Service runtime error: Failed to decode value: LZ4"
    else:
        def no_content(payload, vector=None):
            raise ValueError("Node content not found in metadata dict.")

        monkeypatch.setattr(edge, "node_from_record", no_content)
        detail = "a read failed: Node content not found in metadata dict."
    result = CliRunner().invoke(main, ["search", "cat", "--json"], env=env)
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "StorageError"
    assert error["message"].startswith(f"The vector store at {storage}/edge/")
    assert f"is damaged ({detail}). To recover" in error["message"] and RECOVER in error["message"]


def test_deleted_ledger_keeps_the_points_and_a_reingest_restores_it(damaged, built):
    storage, env = damaged
    (storage / "ledger.json").unlink()
    info = CliRunner().invoke(main, ["info", "--json"], env=env)
    assert info.exit_code == 0
    import json

    data = json.loads(info.stdout)
    assert data["files"] == 0
    assert {k: c["points"] for k, c in data["collections"].items()} == {"text": 2, "image": 1}


def test_wal_deleted_is_repaired_by_the_engine(damaged):
    storage, env = damaged
    shutil.rmtree(storage / "edge/text/shard/wal")
    result = CliRunner().invoke(main, ["search", "cat", "--image-top-k", "0"], env=env)
    assert result.exit_code == 0 and result.output.count("[passage") == 2


@pytest.mark.parametrize("command", [["search", "cat"], ["info"], ["ingest", "."]])
def test_storage_path_that_is_a_file(tmp_path, built, command):
    _, env = built
    path = tmp_path / "storage"
    path.write_text("not a folder")
    result = CliRunner().invoke(main, command, env={**env, "RAG_STORAGE": str(path)})
    assert result.exit_code in (1, 2)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert result.output == (f"Error: RAG_STORAGE {path} is a file, not a folder: point RAG_STORAGE "
                                 "(or --storage) at a folder, or move the file away.\n")


def test_missing_model_path_names_the_setting(built, tmp_path):
    _, env = built
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.md").write_text("hello")
    for variable in ("RAG_TEXT_MODEL", "RAG_IMAGE_MODEL"):
        missing = str(tmp_path / "no-such-model")
        fresh = {**env, "RAG_STORAGE": str(tmp_path / f"s-{variable}"), variable: missing}
        args = ["ingest", str(corpus), "-q"] if variable == "RAG_TEXT_MODEL" else ["search", "cat"]
        if variable == "RAG_IMAGE_MODEL":
            assert CliRunner().invoke(main, ["ingest", str(corpus), "-q"],
                                      env={**fresh, variable: env[variable]}).exit_code == 0
        result = CliRunner().invoke(main, args, env=fresh)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert variable in result.output and missing in result.output, result.output
