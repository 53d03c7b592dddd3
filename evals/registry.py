"""Registry: benchmark name → the :class:`~evals.benchmarks.base.Benchmark` declared in its module.

Modules are imported on first use so that listing names costs nothing.
"""

from __future__ import annotations

import importlib

from evals.benchmarks.base import Benchmark

_MODULES = {
    "mmmu": "evals.benchmarks.mmmu",
    "mmbench": "evals.benchmarks.mmbench",
    "mme": "evals.benchmarks.mme",
    "chartqa": "evals.benchmarks.chartqa",
    "docvqa": "evals.benchmarks.docvqa",
    "textvqa": "evals.benchmarks.textvqa",
    "ai2d": "evals.benchmarks.ai2d",
    "ocrbench": "evals.benchmarks.ocrbench",
    "pope": "evals.benchmarks.pope",
    "scienceqa": "evals.benchmarks.scienceqa",
    "realworldqa": "evals.benchmarks.realworldqa",
    "videomme": "evals.benchmarks.videomme",
    "mvbench": "evals.benchmarks.mvbench",
    "demo": "evals.benchmarks.demo",
    "mathvista": "evals.benchmarks.mathvista",
    "mmstar": "evals.benchmarks.mmstar",
    "hallusionbench": "evals.benchmarks.hallusionbench",
    "infovqa": "evals.benchmarks.infovqa",
    "mmvet": "evals.benchmarks.mmvet",
    "charxiv": "evals.benchmarks.charxiv",
    "refcoco": "evals.benchmarks.refcoco",
}


def list_benchmarks() -> list[str]:
    """Registry names, in declaration order."""
    return list(_MODULES)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as ``name``; KeyError listing the known names otherwise."""
    try:
        module = _MODULES[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(_MODULES)}") from None
    return importlib.import_module(module).BENCHMARK
