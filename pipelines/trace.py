"""Opt-in timing trace of the pipeline's stages: `PIPELINES_TRACE=/path/trace.jsonl ernie-vl eval ...`.

Every actor appends one JSON line per event (`stage`, `event`, wall-clock `t`, `pid`, duration `s`, rows `n`, ...)
to the file named by the environment variable — set it before Ray starts so the workers inherit it (or pass it in
the job's runtime_env). Unset (the default), `trace` returns at once. Lines are short single `write` calls on an
O_APPEND file, so concurrent actors on one machine do not interleave within a line.
"""

from __future__ import annotations

import json
import os
import time

ENV = "PIPELINES_TRACE"


def trace(stage: str, event: str, **fields) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"t": round(time.time(), 4), "stage": stage, "event": event, "pid": os.getpid(), **fields})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except OSError:  # tracing must never break a run
        pass
