"""Import rules: ``evals`` imports the standard library, numpy and pyarrow/pandas — no torch, no ray.

Pillow and PyAV are allowed only in the demo-data generator (``evals/data/make_demo.py`` and the scenes it draws,
``evals/data/demo_task.py``, which the demo model's training draws too).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

EVALS = Path(__file__).resolve().parents[1] / "evals"
FORBIDDEN = {"torch", "torchvision", "ray", "PIL", "av", "cv2", "decord", "transformers", "datasets",
             "ernie_vl", "pipelines", "serve"}
GENERATORS = (EVALS / "data" / "make_demo.py", EVALS / "data" / "demo_task.py")


def test_no_forbidden_imports_in_source():
    offenders = []
    for path in sorted(EVALS.rglob("*.py")):
        if path in GENERATORS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(EVALS)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


@pytest.mark.subprocess
def test_importing_every_module_loads_no_heavy_dependency():
    modules = sorted("evals." + ".".join(p.relative_to(EVALS).with_suffix("").parts)
                     for p in EVALS.rglob("*.py") if p not in GENERATORS and p.name != "__init__.py")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=EVALS.parent, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
