"""The environment variables every Ray worker of this project gets (`runtime_env={"env_vars": worker_env()}`).

One definition for the pipeline, the server and their tests: this source tree on PYTHONPATH (so a clone runs
without `pip install`) and the tiny-checkpoint home `ERNIE_VL_HOME`, if set (else a worker would build its own tiny
checkpoint under `~/.cache/ernie_vl`). A plain function: `ernie_vl` does not import Ray.
"""

from __future__ import annotations

import os
from pathlib import Path

FORWARDED = ("ERNIE_VL_HOME",)  # copied from the driver's environment when set


def worker_env() -> dict[str, str]:
    """{"PYTHONPATH": this checkout first, then the driver's PYTHONPATH} plus each `FORWARDED` variable that is set."""
    root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    env.update({k: os.environ[k] for k in FORWARDED if os.environ.get(k)})
    return env
