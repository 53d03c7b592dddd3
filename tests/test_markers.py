"""The suite's markers and skip policy.

* Markers by inspection (`ast`): a test that starts Ray (`ray.init`, `Cluster`, `serve.run`, the `ray_serve` helper of
  serve_support.py) carries `ray`; a test that spawns processes (`subprocess`, `multiprocessing`,
  `torch.multiprocessing`/`mp.spawn`, `dist.init_process_group`) carries `subprocess`. A test "uses" what its body,
  its module's top-level code, and the module's helpers and fixtures it names (transitively) use; marks count from
  the test's decorators, its class and the module's `pytestmark`. Every mark used is declared in pyproject.toml.
* The skip policy of conftest.py, run with `pytester` on small test files: a `gpu` test without CUDA is skipped and
  the run passes (the summary line counts it as skipped); any other skip fails the run unless ERNIE_VL_ALLOW_SKIPS=1.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BUILTIN_MARKS = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings"}
SPAWN_MODULES = ("subprocess", "multiprocessing", "torch.multiprocessing")


# ------------------------------------------------------------------------------------------------ inspection
def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> what it was imported as (anywhere in the module, function-level imports included)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _needs(name: str) -> str | None:
    """The marker a use of this (resolved, dotted) name requires."""
    if any(name == m or name.startswith(m + ".") for m in SPAWN_MODULES) or name.endswith("init_process_group"):
        return "subprocess"
    last = name.rsplit(".", 1)[-1]
    if name == "ray.init" or last in ("Cluster", "ray_serve") or name in ("ray.serve.run", "serve.run"):
        return "ray"
    return None


def _uses(nodes, aliases) -> tuple[dict[str, str], set[str]]:
    """{marker: evidence} used directly by these nodes, and the plain names they reference."""
    needs, names = {}, set()
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue  # importing is not using
            if isinstance(node, ast.Name):
                names.add(node.id)
            if isinstance(node, ast.arg):
                names.add(node.arg)  # a fixture, by parameter name
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # @pytest.mark.usefixtures("name")
            dotted = _dotted(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
            if dotted:
                head, _, rest = dotted.partition(".")
                resolved = ".".join(p for p in (aliases.get(head, head), rest) if p)
                marker = _needs(resolved)
                if marker:
                    needs.setdefault(marker, f"line {node.lineno}: {dotted}")
    return needs, names


def _marks(exprs) -> set[str]:
    """Names X of every `pytest.mark.X` (called or not) in these expressions."""
    out = set()
    for e in exprs:
        for node in ast.walk(e):
            if isinstance(node, ast.Attribute) and _dotted(node.value) == "pytest.mark":
                out.add(node.attr)
    return out


def _pytestmark(body) -> set[str]:
    return _marks(s.value for s in body if isinstance(s, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in s.targets))


def missing_markers(source: str) -> list[str]:
    """`test: needs marker X (evidence)` for every test of this module source lacking a marker its code needs."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    def_types = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    defs = {n.name: n for n in tree.body if isinstance(n, def_types)}
    # code that runs at import (a `ray.init()` there concerns every test), less the marks themselves
    top_level = [n for n in tree.body if not isinstance(n, def_types) and not _pytestmark([n])]
    module_needs, module_names = _uses(top_level, aliases)
    direct = {name: _uses([node], aliases) for name, node in defs.items()}

    def closure(start_names: set[str], needs: dict[str, str]) -> dict[str, str]:
        needs, seen, todo = dict(needs), set(), list(start_names | module_names)
        while todo:
            name = todo.pop()
            if name in seen or name not in direct:
                continue
            seen.add(name)
            sub_needs, sub_names = direct[name]
            for k, v in sub_needs.items():
                needs.setdefault(k, f"{v} (in {name})")
            todo += sub_names
        return needs

    module_marks = _pytestmark(tree.body)
    tests = []  # (test name, node, marks from its class)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            tests.append((node.name, node, set()))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            cls_marks = _marks(node.decorator_list) | _pytestmark(node.body)
            tests += [(f"{node.name}.{m.name}", m, cls_marks) for m in node.body
                      if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name.startswith("test")]
    problems = []
    for name, node, cls_marks in tests:
        needs, names = _uses([node], aliases)
        have = module_marks | cls_marks | _marks(node.decorator_list)
        for marker, evidence in sorted(closure(names - {node.name}, {**module_needs, **needs}).items()):
            if marker not in have:
                problems.append(f"{name}: needs marker {marker!r} ({evidence})")
    return problems


def _declared_markers() -> set[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    return {m.split(":", 1)[0].strip() for m in cfg["markers"]}


def test_tests_that_start_ray_or_spawn_processes_carry_their_markers():
    problems = []
    for path in sorted(TESTS.glob("test_*.py")):
        problems += [f"{path.name}::{p}" for p in missing_markers(path.read_text())]
    assert not problems, "\n".join(problems)


def test_every_mark_used_is_declared():
    declared = _declared_markers()
    assert {"gpu", "slow", "ray", "subprocess"} <= declared
    undeclared = {}
    for path in sorted(TESTS.glob("*.py")):
        used = _marks([ast.parse(path.read_text())]) - BUILTIN_MARKS
        if used - declared:
            undeclared[path.name] = sorted(used - declared)
    assert not undeclared, f"marks not declared in pyproject.toml: {undeclared}"


# the inspection itself, on small sources: it must be able to fail
_UNMARKED = '''
import subprocess
import multiprocessing as mp
import ray
from ray.cluster_utils import Cluster
from serve_support import ray_serve
import pytest

@pytest.fixture
def session():
    ray.init()
    yield

def _helper():
    return mp.get_context("spawn").Process(target=print)

def _worker():
    import torch.distributed as dist
    dist.init_process_group("gloo")

def test_fixture(session): pass
def test_helper(): _helper()
def test_subprocess(): subprocess.run(["true"])
def test_worker_by_reference(): mp.get_context("spawn").Process(target=_worker)
def test_cluster(): Cluster()
def test_serve():
    with ray_serve():
        pass
def test_plain(): assert 1 + 1 == 2
'''


def test_inspection_finds_unmarked_tests():
    problems = missing_markers(_UNMARKED)
    assert {p.split(":")[0] + ":" + p.split("'")[1] for p in problems} == {
        "test_fixture:ray", "test_helper:subprocess", "test_subprocess:subprocess",
        "test_worker_by_reference:subprocess", "test_cluster:ray", "test_serve:ray",
    }, problems


def test_inspection_accepts_module_and_test_marks():
    marked = _UNMARKED.replace("import pytest\n", "import pytest\npytestmark = [pytest.mark.ray]\n")
    marked = marked.replace("def test_helper", "@pytest.mark.subprocess\ndef test_helper")
    assert {p.split(":")[0] for p in missing_markers(marked)} == {"test_subprocess", "test_worker_by_reference"}
    everything = marked.replace("pytestmark = [pytest.mark.ray]", "pytestmark = [pytest.mark.ray, pytest.mark.subprocess]")
    assert missing_markers(everything) == []
    # Ray started at import time needs the marker on every test of the module
    at_import = "import ray\nray.init()\ndef test_a(): pass\n"
    assert missing_markers(at_import) == ["test_a: needs marker 'ray' (line 2: ray.init)"]


# ------------------------------------------------------------------------------------------------ skip policy
_POLICY_TESTS = '''
import pytest
import torch

@pytest.mark.gpu
def test_on_cuda():
    assert torch.cuda.is_available()

def test_plain():
    assert True
'''

_UNEXPECTED_SKIP = '''
import pytest

def test_optional():
    pytest.skip("optional dependency missing")
'''


@pytest.fixture
def policy(pytester, monkeypatch):
    """A pytester directory with this suite's conftest.py and markers; skips not allowed by the environment."""
    monkeypatch.delenv("ERNIE_VL_ALLOW_SKIPS", raising=False)
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n" + "".join(f"    {m}: -\n" for m in sorted(_declared_markers())))
    pytester.makepyfile(test_policy=_POLICY_TESTS)
    return pytester


def _cuda(monkeypatch, available: bool):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)


def test_gpu_tests_without_cuda_are_expected_skips(policy, monkeypatch):
    _cuda(monkeypatch, False)
    result = policy.runpytest("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*1 gpu test(s) skipped as expected*",
                                 "*SKIPPED*test_policy.py*needs a CUDA device*", "*1 passed, 1 skipped*"])
    result.stdout.no_fnmatch_line("*skipped unexpectedly*")


def test_any_other_skip_fails_the_run(policy, monkeypatch):
    _cuda(monkeypatch, False)
    policy.makepyfile(test_other=_UNEXPECTED_SKIP)
    result = policy.runpytest("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*1 test(s) skipped unexpectedly*test_other.py::test_optional*"])
    result.stdout.no_fnmatch_line("*unexpectedly*test_on_cuda*")


def test_allow_skips_lets_an_unexpected_skip_pass(policy, monkeypatch):
    _cuda(monkeypatch, False)
    monkeypatch.setenv("ERNIE_VL_ALLOW_SKIPS", "1")
    policy.makepyfile(test_other=_UNEXPECTED_SKIP)
    result = policy.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.OK


def test_with_cuda_gpu_tests_run_and_their_skips_are_unexpected(policy, monkeypatch):
    _cuda(monkeypatch, True)
    result = policy.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)  # the gpu test ran (it asserts CUDA is available)
    assert result.ret == pytest.ExitCode.OK
    policy.makepyfile(test_gpu_skip='''
import pytest

@pytest.mark.gpu
def test_skips_itself():
    pytest.skip("kernel not built for this GPU")
''')
    result = policy.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*1 test(s) skipped unexpectedly*test_skips_itself*"])
