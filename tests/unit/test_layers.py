"""The layering contract of src/nla, checked over the import graph (module- and function-level imports alike).

models -> data -> autoencoder -> explainers | eval -> train -> rl -> reading -> pipeline -> viewer -> cli:
a module imports only from its own layer or below, two packages of one layer never import each other,
and no two modules import each other. The ground modules (errors, atomic, layout, ...) import nothing above.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "nla"
ORDER = [{"models"}, {"data"}, {"autoencoder"}, {"explainers", "eval"}, {"train"}, {"rl"}, {"reading"},
         {"pipeline"}, {"viewer"}, {"cli"}]
GROUND = {"errors", "atomic", "changes", "record_log", "layout", "inputs"}


def layer_of(parts: tuple[str, ...]) -> int | None:
    if not parts or parts[0] in ("__init__", "__main__"):
        return None
    if parts[0] in GROUND:
        return -1
    head = parts[0]
    return next((i for i, names in enumerate(ORDER) if head in names), None)


def imports_of(path: Path, rel: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Every nla module the file (nla/REL.py) imports, anywhere in it, as path parts below nla/."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = rel[: len(rel) - node.level]
            if node.module:
                found.add((*base, *node.module.split(".")))
            else:  # from . import name: the names are modules
                found |= {(*base, a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nla."):
            found.add(tuple(node.module.split(".")[1:]))
        elif isinstance(node, ast.Import):
            found |= {tuple(a.name.split(".")[1:]) for a in node.names if a.name.startswith("nla.")}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    parts = {path: path.relative_to(SRC).with_suffix("").parts for path in SRC.rglob("*.py")}
    return {rel: imports_of(path, rel) for path, rel in parts.items()}


def test_no_module_imports_from_a_layer_above_its_own(graph):
    upward = [f"{'/'.join(m)} imports nla.{'.'.join(o)}" for m, others in graph.items() for o in others
              if layer_of(m) is not None and layer_of(o) is not None and layer_of(o) > layer_of(m)]
    assert not upward, upward


def test_no_two_modules_and_no_two_packages_of_one_layer_import_each_other(graph):
    edges = {(m, o) for m, others in graph.items() for o in others}
    modules = sorted({"/".join(sorted(["/".join(a), "/".join(b)])) for a, b in edges if (b, a) in edges and a != b})
    packages = {(a[0], b[0]) for a, b in edges if a[0] != b[0] and layer_of(a) == layer_of(b) != -1
                and layer_of(a) is not None}
    assert not modules, modules
    assert not [p for p in packages if (p[1], p[0]) in packages], packages


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("from . import claims\n\ndef f():\n    from nla.cli.data import extract\n")
    found = imports_of(module, ("reading", "probe"))
    assert found == {("reading", "claims"), ("cli", "data")}
    assert layer_of(("cli", "data")) > layer_of(("reading", "probe")) > layer_of(("models", "target"))
