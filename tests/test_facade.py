"""The `rag` facade: `from rag import ...` names, resolved lazily so `import rag` stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import rag

from conftest import run_python

HEAVY = ("torch", "transformers", "sentence_transformers", "llama_index")


def _imported_after(code: str) -> list:
    """The heavy top-level packages a fresh interpreter holds after running `code`."""
    probe = code + "\nimport sys\nprint(sorted({m.split('.')[0] for m in sys.modules} & set(%r)))" % (HEAVY,)
    return ast.literal_eval(run_python(probe))


def test_import_rag_imports_no_model_or_index_library():
    assert _imported_after("import rag") == []


def test_settings_and_values_import_no_model_or_index_library():
    assert _imported_after("from rag import Settings, Hit, IngestReport, SearchRequest, RagError") == []


def test_facade_names_are_the_library_classes():
    from rag import Answer, Hit, IngestReport, RagService, Settings

    import rag.config
    import rag.service
    import rag.types

    assert RagService is rag.service.RagService
    assert Settings is rag.config.Settings
    assert (Hit, IngestReport) == (rag.types.Hit, rag.types.IngestReport)
    # Answer lives in rag.types once it moves there; until then in the answer engine.
    if hasattr(rag.types, "Answer"):
        assert Answer is rag.types.Answer
    else:
        import rag.answer.engine

        assert Answer is rag.answer.engine.Answer


def test_every_exported_name_resolves_and_is_listed():
    for name in rag.__all__:
        assert getattr(rag, name) is not None, name
    assert set(rag.__all__) <= set(dir(rag))


def test_first_module_that_defines_a_name_wins(monkeypatch):
    import rag.errors

    monkeypatch.setitem(rag._EXPORTS, "BadInputError", ("rag.types", "rag.errors"))
    monkeypatch.delitem(vars(rag), "BadInputError", raising=False)
    assert rag.BadInputError is rag.errors.BadInputError


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match=r"^module 'rag' has no attribute 'Nope'$"):
        rag.Nope  # noqa: B018


def test_python_dash_m_rag_is_the_rag_command():
    out = subprocess.run([sys.executable, "-m", "rag", "--version"], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout.strip()) == (0, f"rag, version {rag.__version__}")
    out = subprocess.run([sys.executable, "-m", "rag", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("Usage: rag [OPTIONS] COMMAND [ARGS]...")
