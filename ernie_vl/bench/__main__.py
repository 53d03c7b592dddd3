"""Benchmarks: ``python -m ernie_vl.bench <subcommand> [options]``.

Subcommands register themselves in :data:`SUBCOMMANDS` as ``name -> (module, help)``; each module provides
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their subcommand runs, so a
benchmark's heavy or optional dependencies (e.g. transformers for the reference side) never load otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "preprocess": (
        "ernie_vl.bench.preprocess",
        "images/s and videos/s of ernie_vl preprocessing vs the transformers 5.23.0 reference",
    ),
    "generate": (
        "ernie_vl.bench.generate",
        "prefill/decode/samples per second of our engine vs transformers 5.23.0 on the W1 image-MCQ workload",
    ),
    "reuse": (
        "ernie_vl.bench.reuse",
        "samples/s with and without media-feature and shared-prefix reuse vs transformers 5.23.0 (mmbench, videomme, pope)",
    ),
    "experts": (
        "ernie_vl.bench.experts",
        "per-rank memory, samples/s and all-to-all volume of expert-parallel replicas (K = 1, 2, ...)",
    ),
    "memory": (
        "ernie_vl.bench.memory",
        "weights by part and KV-cache capacity of a model shape on 80 and 141 GB cards",
    ),
    "pipeline": (
        "pipelines.bench",  # a string: ernie_vl never imports ray/pipelines unless this subcommand runs
        "end-to-end samples/s of the Ray Data pipeline vs the bare engine loop on the same samples",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ernie_vl.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        # Import lazily but early enough to declare the options; add_arguments must not import heavy dependencies.
        importlib.import_module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
