"""The environment variables every Ray worker of this project gets (`runtime_env={"env_vars": worker_env()}`).

One definition for the pipeline, the server and their tests: this source tree on PYTHONPATH (so a clone runs
without `pip install`) and the tiny-checkpoint home `ERNIE_VL_HOME`, if set (else a worker would build its own tiny
checkpoint under `~/.cache/ernie_vl`). A plain function: `ernie_vl` does not import Ray.

`default_ray_auth` is the driver's side: the authentication mode of a local Ray instance this project starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FORWARDED = ("ERNIE_VL_HOME",)  # copied from the driver's environment when set


def worker_env() -> dict[str, str]:
    """{"PYTHONPATH": this checkout first, then the driver's PYTHONPATH} plus each `FORWARDED` variable that is set."""
    root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    env.update({k: os.environ[k] for k in FORWARDED if os.environ.get(k)})
    return env


AUTH_MODE = "RAY_AUTH_MODE"  # Ray's own variable: `token` or `disabled`


def default_ray_auth() -> bool:
    """Before a local Ray instance may be started (RAY_ADDRESS unset): run it with Ray's token authentication, said
    explicitly.

    That is what Ray 2.60 does anyway when RAY_AUTH_MODE is unset (a token in ~/.ray/auth_token, made on first use),
    but then it warns on every start that it chose for the user. A mode the user set (`disabled`, `token`) is kept,
    and with RAY_ADDRESS nothing is set: joining a cluster takes the cluster's mode, which only the user knows.
    NOTE: only while Ray is not imported in this process: Ray reads the mode once, on import, and a mode set later
    would reach the processes it starts (GCS, raylet) but not this one, which then fails to authenticate. Returns
    whether RAY_AUTH_MODE is set now."""
    if AUTH_MODE not in os.environ and not os.environ.get("RAY_ADDRESS") and "ray._raylet" not in sys.modules:
        os.environ[AUTH_MODE] = "token"
    return AUTH_MODE in os.environ
