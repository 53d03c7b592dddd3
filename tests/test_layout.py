"""The layout's import rules and module sizes, checked on the source (README "Repository layout").

Every module of the project packages is parsed with `ast`; every import statement counts, at module level or inside a
function (a lazy import is still a dependency), relative ones resolved to their absolute module. The rules make the
packages a DAG: ``ernie_vl_cli`` may import every package and none imports it; ``pipelines`` imports ``ernie_vl``,
``replicas`` and ``evals``; ``serve`` imports ``ernie_vl`` and ``replicas``; ``replicas`` imports ``ernie_vl``;
``ernie_vl`` and ``evals`` import no other project package (nor Ray; ``evals`` not torch either).

Nothing is imported, so the test runs in well under a second and needs none of the packages' dependencies.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ernie_vl", "ernie_vl_cli", "evals", "pipelines", "serve", "replicas")
MAX_LINES = 500

# package -> top-level modules it must not import, and why
FORBIDDEN: dict[str, tuple[set[str], str]] = {
    "ernie_vl": (
        {"pipelines", "serve", "replicas", "evals", "ray", "ernie_vl_cli"},
        "the model package depends on none of its users and never on Ray",
    ),
    "evals": (
        {"torch", "ray", "ernie_vl", "pipelines", "serve", "replicas", "ernie_vl_cli"},
        "metrics run anywhere: no torch, no Ray (the other project packages all bring torch)",
    ),
    "serve": ({"pipelines", "ernie_vl_cli"}, "the server and the batch job never import each other"),
    "pipelines": ({"serve", "ernie_vl_cli"}, "the server and the batch job never import each other"),
    "replicas": ({"pipelines", "serve", "ernie_vl_cli"}, "the expert-sharded gang serves both pipelines and serve"),
}


def module_files(root: Path = ROOT) -> list[tuple[str, Path]]:
    """``(dotted module name, path)`` of every module of the project packages."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append((".".join(parts), path))
    return out


def imports(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """``(absolute imported module, line)`` of every import statement in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((name, node.lineno))
    return found


def violations(package: str, forbidden: set[str]) -> list[str]:
    out = []
    for module, path in module_files():
        if module.split(".")[0] != package:
            continue
        for name, line in imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            if name.split(".")[0] in forbidden:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return out


def test_import_parser_sees_lazy_and_relative_imports():
    source = "import os\nfrom . import chat\ndef f():\n    from ..pipelines.cli import x\n    import ray.serve\n"
    found = imports(source, "ernie_vl.bench.generate", is_package=False)
    assert found == [("os", 1), ("ernie_vl.bench", 2), ("ernie_vl.pipelines.cli", 4), ("ray.serve", 5)]
    assert imports("from .video import X", "ernie_vl", is_package=True) == [("ernie_vl.video", 1)]


def test_every_package_is_found():
    found = {module.split(".")[0] for module, _ in module_files()}
    assert found == set(PACKAGES)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_rules(package):
    forbidden, why = FORBIDDEN[package]
    bad = violations(package, forbidden)
    assert not bad, f"{package} must not import {sorted(forbidden)} ({why}):\n  " + "\n  ".join(bad)


def test_no_module_over_500_lines():
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for _, path in module_files()}
    over = {p: n for p, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them by concept): " + ", ".join(
        f"{p} ({n})" for p, n in over.items()
    )
