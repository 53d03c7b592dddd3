"""MathVista scored end to end with a real `ernie-vl serve` as the LLM judge, then again from the cache with the
server stopped.

`ernie-vl serve` (tiny checkpoint, a subprocess on a loopback port) judges the answers of `ernie-vl eval --benchmark
mathvista --judge-url ...` (another subprocess, on its own local Ray). The tiny model's replies are noise, which is
fine for the plumbing: the prompts the benchmark asks for are the ones cached, each judged row's score is the
benchmark's reading of its cached reply, the manifest counts them; with the server stopped `ernie-vl score` asks
nothing and gives the same scores.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from evals_fixtures.datasets import build_all
from serve_support import free_port, stop_server

from evals.judge_cache import CACHE_DIR
from evals.registry import get_benchmark

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.subprocess]
ROOT = Path(__file__).resolve().parents[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def predictions(out: Path) -> list[dict]:
    return sorted(pq.read_table(out / "predictions").to_pylist(), key=lambda r: r["sample_id"])


def test_mathvista_judged_by_ernie_vl_serve_then_rescored_from_the_cache(tmp_path):
    data = build_all(tmp_path / "data")["mathvista"]
    out = tmp_path / "results"
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "RAY_ADDRESS": ""}
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "ernie_vl_cli", "serve", "--port", str(port), "--num-cpus", "0.5", "--torch-threads",
         "1"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                model = _get(f"{url}/models")["data"][0]["id"]
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(1)
        run = subprocess.run(
            [sys.executable, "-m", "ernie_vl_cli", "eval", "--benchmark", "mathvista", "--data", str(data), "--out",
             str(out), "--max-new-tokens", "8", "--num-cpus", "2", "--quiet", "--judge-url", url, "--judge-model",
             model], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        stop_server(server)
        log.close()
    assert server.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]

    bench = get_benchmark("mathvista")
    rows = predictions(out)
    cache = pq.read_table(out / CACHE_DIR).to_pylist()
    replies = {c["prompt"]: c["reply"] for c in cache}
    wanted = {bench.judge_prompt(r, r["prediction"], "official") for r in rows} - {None}
    assert wanted and set(replies) == wanted and {c["judge_model"] for c in cache} == {model}
    for r in rows:
        prompt = bench.judge_prompt(r, r["prediction"], "official")
        expected = bench.score(r, r["prediction"], "official") if prompt is None else \
            bench.score_judged(r, r["prediction"], replies[prompt], "official")
        assert (r["extracted"], r["score"]) == expected and r["judge"] == (model if prompt else "rule")
    manifest = json.loads((out / "manifest.json").read_text())
    scoring = manifest["benchmarks"]["mathvista"]["scoring"]
    assert scoring["method"] == "judge" and scoring["judge_model"] == model and scoring["judge_url"] == url
    assert (scoring["asked"], scoring["cached"], scoring["failed"]) == (len(wanted), 0, 0)
    metrics = pq.read_table(out / "metrics.parquet")

    from pipelines.cli import main  # the server is stopped: every reply must come from the cache

    assert main(["score", str(out), "--judge-url", url, "--judge-model", model, "--judge-retries", "0"]) == 0
    assert [(r["extracted"], r["score"], r["judge"]) for r in predictions(out)] == \
        [(r["extracted"], r["score"], r["judge"]) for r in rows]
    assert pq.read_table(out / "metrics.parquet").equals(metrics)
    scoring = json.loads((out / "manifest.json").read_text())["benchmarks"]["mathvista"]["scoring"]
    assert (scoring["asked"], scoring["cached"], scoring["failed"]) == (0, len(wanted), 0)
