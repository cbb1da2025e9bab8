"""Settings: one declared table, checked once; the README's list is generated from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rag.config import SPECS, Settings, SettingsError, settings_markdown

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("env, message", [
    ({"RAG_CHUNK_SIZE": "big"}, "RAG_CHUNK_SIZE must be an integer, got 'big'"),
    ({"RAG_CHUNK_SIZE": "0"}, "RAG_CHUNK_SIZE must be above 0, got '0'"),
    ({"RAG_TORCH_THREADS": "-1"}, "RAG_TORCH_THREADS must be at least 0, got '-1'"),
    ({"RAG_LLM_TIMEOUT": "soon"}, "RAG_LLM_TIMEOUT must be a number, got 'soon'"),
    ({"RAG_LLM_TIMEOUT": "0"}, "RAG_LLM_TIMEOUT must be above 0, got '0'"),
    ({"RAG_STORE": "x"}, "RAG_STORE must be edge or local, got 'x'"),
    ({"RAG_LLM": "gpt"}, "RAG_LLM must be none, openai, openai-like or ollama, got 'gpt'"),
    ({"RAG_LLM_VISION": "maybe"}, "RAG_LLM_VISION must be auto, true or false, got 'maybe'"),
    ({"RAG_PRECISION": "fp8"}, "RAG_PRECISION must be auto, fp32, bf16 or int8, got 'fp8'"),
    ({"RAG_IMAGE_BACKEND": "vit"}, "RAG_IMAGE_BACKEND must be clip-transformers or clip, got 'vit'"),
    ({"RAG_QUANTIZATION": "int4"}, "RAG_QUANTIZATION must be int8 or none, got 'int4'"),
    ({"RAG_SHARD_NUMBER": "0"}, "RAG_SHARD_NUMBER must be above 0, got '0'"),
    ({"RAG_HNSW_M": "many"}, "RAG_HNSW_M must be an integer, got 'many'"),
    ({"RAG_CHUNK_OVERLAP": "480"}, "RAG_CHUNK_OVERLAP must be below RAG_CHUNK_SIZE (480), got 480"),
])
def test_bad_values_are_named_once_at_build_time(env, message):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)  # callers that catch ValueError still do


def test_direct_construction_is_checked_too():
    """Code that receives a Settings trusts it: every way of building one goes through the table."""
    cases = [
        (dict(llm="gpt"), "RAG_LLM must be none, openai, openai-like or ollama, got 'gpt'"),
        (dict(llm="ollama", llm_vision="maybe"), "RAG_LLM_VISION must be auto, true or false, got 'maybe'"),
        (dict(llm="ollama", llm_timeout="soon"), "RAG_LLM_TIMEOUT must be a number, got 'soon'"),
        (dict(image_backend="vit"), "RAG_IMAGE_BACKEND must be clip-transformers or clip, got 'vit'"),
        (dict(chunk_size=True), "RAG_CHUNK_SIZE must be an integer, got True"),
        (dict(text_model=None), "RAG_TEXT_MODEL must be a string, got None"),
    ]
    for kw, message in cases:
        with pytest.raises(SettingsError) as info:
            Settings(**kw)
        assert str(info.value) == message
    with pytest.raises(SettingsError, match="^RAG_STORE must be edge or local, got 'x'$"):
        Settings().with_overrides(store="x")


def test_values_are_parsed_to_their_declared_types():
    s = Settings.from_env({"RAG_CHUNK_SIZE": " 256 ", "RAG_LLM_TIMEOUT": "2.5", "RAG_LLM_VISION": "Yes",
                           "RAG_STORAGE": "/tmp/x", "RAG_PRECISION": "BF16", "RAG_SHARD_NUMBER": "3",
                           "RAG_LLM_MODEL": ""})
    assert (s.chunk_size, s.llm_timeout, s.llm_vision, s.storage, s.precision, s.shard_number) == (
        256, 2.5, "true", Path("/tmp/x"), "bf16", 3)
    assert s.llm_model is None  # empty means unset
    assert Settings(llm_timeout="2.5").llm_timeout == 2.5
    assert Settings(llm_vision="off").llm_vision == "false"
    assert Settings(text_model=Path("/models/minilm")).text_model == "/models/minilm"
    assert Settings(llm_timeout=3).llm_timeout == 3.0 and isinstance(Settings(llm_timeout=3).llm_timeout, float)


def test_every_field_is_declared_with_a_type_default_and_help():
    names = {spec.name for spec in SPECS}
    for needed in ("shard_number", "replication_factor", "hnsw_m", "hnsw_ef_construct", "hnsw_ef",
                   "quantization", "precision", "image_backend", "llm", "llm_vision", "store"):
        assert needed in names
    for spec in SPECS:
        assert spec.help and spec.kind in (str, int, float, Path)
        assert spec.parse(spec.default) == spec.default or spec.default is None
    assert set(Settings.__dataclass_fields__) == names | {"explicit"}


def test_settings_stay_a_frozen_dataclass_with_keyword_overrides():
    s = Settings.from_env({}, storage="here", chunk_size=100, llm=None)
    assert s.storage == Path("here") and s.chunk_size == 100 and s.llm == "none"
    with pytest.raises(Exception):
        s.chunk_size = 5  # type: ignore[misc]
    t = s.with_overrides(hnsw_ef=64, store=None)
    assert (t.hnsw_ef, t.store, t.chunk_size) == (64, "edge", 100)
    with pytest.raises(TypeError, match="unknown settings: nosuch"):
        Settings.from_env({}, nosuch=1)
    assert "sk-secret" not in repr(Settings(llm_api_key="sk-secret", qdrant_api_key="sk-secret"))


def test_explicit_names_what_was_set_on_purpose():
    assert Settings.from_env({}).explicit == frozenset()
    s = Settings.from_env({"RAG_TEXT_MODEL": "a", "RAG_LLM": ""}, image_model="b", chunk_size=None)
    assert s.explicit == {"text_model", "image_model"}
    # the default value, set on purpose, still counts
    assert Settings.from_env({"RAG_TEXT_MODEL": Settings().text_model}).is_explicit("text_model")
    assert s.with_overrides(store="local").explicit == {"text_model", "image_model", "store"}
    # built directly: what differs from the defaults
    assert Settings(text_model="x", chunk_size=480).explicit == {"text_model"}
    assert Settings(text_model="x") == Settings(text_model="x", explicit=frozenset())


def _readme_table() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- settings:[^\n]*-->\n(.*?)<!-- /settings -->", text, re.S)
    assert found, "README.md lost its generated settings block"
    return found.group(1)


def test_readme_settings_list_is_the_generated_table():
    assert _readme_table() == settings_markdown(), (
        "README.md's settings list differs from rag/config.py: regenerate it with "
        "`python -m rag.config --markdown`")
    for spec in SPECS:
        assert f"`{spec.env}`" in _readme_table()


def test_markdown_command():
    done = subprocess.run([sys.executable, "-m", "rag.config", "--markdown"], capture_output=True, text=True,
                          cwd=str(REPO), env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == settings_markdown()
    bad = subprocess.run([sys.executable, "-m", "rag.config"], capture_output=True, text=True,
                         cwd=str(REPO), env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and bad.stderr.strip() == "usage: python -m rag.config --markdown"
