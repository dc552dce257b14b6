"""The package graph of ``platform/bridgerec`` follows the declared layers (see ARCHITECTURE.md).

Imports are read with ``ast`` from every file: module level and inside functions, plus the
lazy references that registries and package faces resolve later (``"bridgerec.x.y:attr"``
strings and ``import_module("bridgerec.x.y")`` literals), so an arrow hidden behind a lazy
import still counts. A *unit* is a top-level module or subpackage of ``bridgerec``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "platform" / "bridgerec"

ORDER = [
    # leaf: imports nothing from bridgerec
    "_config_base", "_registry", "_lazy", "_csr", "_files", "console", "runtime", "benchmarking",
    # section packages, each with its own config.py taking only its own section
    "data", "models", "llm", "evaluation", "retrieval", "methods", "augment",
    # the root config: composes the sections, validates plugin names against their registries
    "config",
    # packages that take the whole Config
    "training", "tracking",
    # deployments and strategies (using what methods export), sweeps
    "serving", "tuning",
    # orchestration and the command line
    "workflows", "cli",
]
"""Arrows point from a unit to units listed before it, never after."""

_LAZY = re.compile(r"^bridgerec(?:\.\w+)+:[\w.]+$")


def _unit(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0][:-3] if len(rel) == 1 else rel[0]


def _targets(tree: ast.AST, package: str) -> list[tuple[str, int]]:
    """(imported dotted module, line) for every import and lazy reference in ``tree``."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [(a.name, n.lineno) for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = package.split(".")[: len(package.split(".")) - (n.level - 1)]
                out.append((".".join(base + ([n.module] if n.module else [])), n.lineno))
            else:
                out.append((n.module or "", n.lineno))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and _LAZY.match(n.value):
            out.append((n.value.split(":")[0], n.lineno))
        elif (isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) == "import_module"
              and n.args and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)):
            out.append((n.args[0].value, n.lineno))
    return out


def package_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> {imported unit: ["file:line", ...]} over the whole package."""
    edges: dict[str, dict[str, list[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        unit = _unit(path)
        if unit == "__init__":
            continue
        package = ".".join(("bridgerec",) + path.parent.relative_to(ROOT).parts)
        edges.setdefault(unit, {})
        for module, line in _targets(ast.parse(path.read_text()), package):
            parts = module.split(".")
            if parts[0] == "bridgerec" and len(parts) > 1 and parts[1] != unit:
                edges[unit].setdefault(parts[1], []).append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def _cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_unit_has_a_place_in_the_order():
    units = set(package_graph())
    assert not units - set(ORDER), f"add {sorted(units - set(ORDER))} to ORDER (and to ARCHITECTURE.md)"


def test_no_cycle_between_top_level_units():
    assert _cycles(package_graph()) == []


def test_every_arrow_points_down_the_declared_order():
    rank = {u: i for i, u in enumerate(ORDER)}
    against = [f"{u} -> {v} ({', '.join(where[:3])})"
               for u, targets in package_graph().items() for v, where in targets.items()
               if v in rank and u in rank and rank[v] > rank[u]]
    assert against == [], "imports against the declared order:\n  " + "\n  ".join(against)


def test_the_checker_sees_lazy_and_function_level_imports():
    tree = ast.parse("def f():\n    from bridgerec.models import x\nT = 'bridgerec.methods.rlmrec:RLMRecCon'\n"
                     "def g():\n    import_module('bridgerec.serving.app')\n")
    assert [m for m, _ in _targets(tree, "bridgerec.data")] == ["bridgerec.models", "bridgerec.methods.rlmrec", "bridgerec.serving.app"]
    assert _cycles({"a": {"b": []}, "b": {"a": []}, "c": {"a": []}}) == [["a", "b"]]


@pytest.mark.parametrize("module", ["bridgerec.config", "bridgerec.data.config", "bridgerec.models.config",
                                    "bridgerec.methods.config", "bridgerec.evaluation.config",
                                    "bridgerec.llm.config", "bridgerec.augment.config"])
def test_importing_a_config_imports_no_heavy_package(module):
    """Package faces stay light: a section's config (and the root config) pulls in no torch/Ray/pandas."""
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'ray', 'pandas', 'transformers') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_every_module_imports_first():
    """Each module imported first, in a process that has loaded no other bridgerec module (as a
    Ray worker does when it unpickles a function): a cycle between two modules of one package
    shows up only then, as 'partially initialized module'. Third-party modules stay loaded."""
    import subprocess
    import sys

    names = sorted({".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
                    for p in ROOT.rglob("*.py")})
    code = (
        "import importlib, sys, traceback\n"
        f"names = {names!r}\n"
        "bad = []\n"
        "for n in names:\n"
        "    for m in [m for m in sys.modules if m == 'bridgerec' or m.startswith('bridgerec.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{n}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
