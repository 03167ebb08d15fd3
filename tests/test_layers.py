"""The package's layers point down: every ``prefdistill`` import (top of file or inside a function) goes from
a layer to a lower one, so there is no cycle between packages and ``losses/`` imports nothing above ``utils/``.

Layers, lowest first (a package may import only packages of lower layers, and itself):

    0  utils                       plumbing: atomic writes, content keys, markdown tables, run cost, ranks
    1  models, data, losses        specs and weights; records and batches; pure loss functions
    2  generation, callbacks       sampling models; Lightning callbacks
    3  modules, eval               training modules; evaluation (scorers, suites, reports)
    4  pipeline                    cached stages before training (samples, pairs, lists, SFT, reward model)
    5  analysis and the top-level modules (train, evaluate, generate, preflight, memory, convert, strategies)

A new package must be given a layer here (the test names it).
"""

from __future__ import annotations

import ast
from pathlib import Path

from train_helpers import REPO

PACKAGE = REPO / "prefdistill"
LAYERS = {"utils": 0, "models": 1, "data": 1, "losses": 1, "generation": 2, "callbacks": 2, "modules": 3,
          "eval": 3, "pipeline": 4, "analysis": 5}  # fmt: skip
TOP = 5  # a module directly under prefdistill/ (an entry point or a plan over everything below)


def unit(module: str) -> str:
    """``prefdistill.pipeline.plad`` -> ``pipeline``; a top-level module (``prefdistill.train``) is its own unit."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<package>"


def layer(name: str, top_level: set[str]) -> int:
    return TOP if name in top_level or name == "<package>" else LAYERS[name]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every ``prefdistill.*`` module ``path`` imports, wherever the statement is (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("prefdistill")
        ):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("prefdistill")}
    return found


def edges() -> list[tuple[str, str, str]]:
    """``(importing module, imported module, importing file)`` across units."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        out += [(source, target, str(path.relative_to(REPO))) for target in sorted(imports(path))
                if unit(source) != unit(target)]  # fmt: skip
    return out


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages - {"assets", "configs"} <= set(LAYERS), sorted(packages - set(LAYERS))


def test_imports_point_down_only():
    top_level = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    upward = [
        f"{file}: {source} imports {target} ({unit(source)} is layer {layer(unit(source), top_level)}, "
        f"{unit(target)} layer {layer(unit(target), top_level)})"
        for source, target, file in edges()
        if unit(target) != "<package>" and unit(source) not in top_level and unit(source) != "<package>"
        and layer(unit(target), top_level) >= layer(unit(source), top_level)
    ]  # fmt: skip
    assert not upward, (
        "imports that do not point down (see this file's docstring for the layers):\n" + "\n".join(upward)
    )


def test_losses_import_nothing_above_utils():
    above = [(s, t) for s, t, _ in edges() if unit(s) == "losses" and unit(t) != "utils"]
    assert not above, above


def test_the_check_sees_lazy_imports(tmp_path):
    """An import inside a function counts (a cycle hidden behind a lazy import is still a cycle)."""
    lazy = tmp_path / "m.py"
    lazy.write_text("def f():\n    from prefdistill.pipeline.stages import MARKER\n    return MARKER\n")
    assert imports(lazy) == {"prefdistill.pipeline.stages"}
