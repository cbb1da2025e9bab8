"""The package's layering: imports point down only (docs/architecture.md draws the map).

Every `import rag.x` / `from rag.x import y` in `rag/`, at module level or inside a function,
is an edge; an edge from a lower layer to a higher one fails the test. `rag/testing/` (stand-in
models and fakes) may be imported only by `rag/standins.py`, which picks offline stand-ins.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rag

PACKAGE = Path(rag.__file__).parent

# Lower number = lower layer. A module may import modules of a strictly lower layer, or of
# its own top-level package.
LAYERS = {
    "rag": 0,  # the facade (only __version__ is imported from it)
    "rag.errors": -1,  # below types.py, whose requests validate() into its errors
    "rag.types": 0,
    "rag.config": 1,
    "rag.media": 2,
    "rag.testing": 2,
    "rag.models": 3,
    "rag.stores": 3,
    "rag.corpus": 3,
    "rag.index": 4,
    "rag.search": 5,
    "rag.answer": 6,
    "rag.eval": 7,
    "rag.client": 7,
    "rag.standins": 7,
    "rag.service": 8,
    "rag.demo": 8,
    "rag.display": 9,
    "rag.server": 10,
    "rag.cli": 11,
    "rag.__main__": 12,
}
MAY_IMPORT_TESTING = {"rag.standins"}  # the offline stand-ins every command may choose


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit(name: str) -> str:
    """The layered unit a module belongs to: rag.x for rag.x.y.z."""
    parts = name.split(".")
    return ".".join(parts[:2])


def rag_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported rag module) for every import of the package in a source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rag"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "rag":
                found.append((node.lineno, node.module))
    return found


def all_edges() -> list[tuple[str, int, str]]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        if source == "rag":  # the lazy facade re-exports from every layer by design
            continue
        edges += [(source, line, target) for line, target in rag_imports(path)]
    return edges


def test_every_module_has_a_layer():
    missing = sorted({unit(module_name(p)) for p in PACKAGE.rglob("*.py")} - set(LAYERS))
    assert missing == [], f"give these a layer in LAYERS and docs/architecture.md: {missing}"


def violations(edges) -> list[str]:
    """The edges that point up (or reach the test stand-ins from outside the demo)."""
    wrong = []
    for source, line, target in edges:
        src, dst = unit(source), unit(target)
        if src == dst:
            continue
        if dst == "rag.testing":
            if src not in MAY_IMPORT_TESTING:
                wrong.append(f"{source}:{line} imports {target} (test stand-ins are for tests, bench and rag.standins)")
            continue
        if LAYERS[dst] >= LAYERS[src]:
            wrong.append(f"{source}:{line} imports {target} (layer {LAYERS[src]} -> {LAYERS[dst]})")
    return wrong


def test_imports_point_down():
    assert violations(all_edges()) == []


def test_the_checker_catches_upward_and_sideways_imports():
    edges = [("rag.stores.edge", 3, "rag.index.core"), ("rag.search.retriever", 9, "rag.answer.engine"),
             ("rag.answer.engine", 4, "rag.testing.random_models"), ("rag.index.ingest", 5, "rag.index.core"),
             ("rag.standins", 7, "rag.testing.random_models"), ("rag.cli.demo", 8, "rag.testing.random_models")]
    assert violations(edges) == [
        "rag.stores.edge:3 imports rag.index.core (layer 3 -> 4)",
        "rag.search.retriever:9 imports rag.answer.engine (layer 5 -> 6)",
        "rag.answer.engine:4 imports rag.testing.random_models (test stand-ins are for tests, bench and rag.standins)",
        "rag.cli.demo:8 imports rag.testing.random_models (test stand-ins are for tests, bench and rag.standins)",
    ]


def test_the_edge_reader_sees_function_level_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from rag.service import RagService\n    import rag.cli.common\n")
    assert rag_imports(probe) == [(2, "rag.service"), (3, "rag.cli.common")]
