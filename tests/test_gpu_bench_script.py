"""The prepared GPU benchmark script runs end to end (dry run on the CPU at the tiny shape) and writes the JSON
files a GPU session commits under docs/perf/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_script_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "SHAPE": "tiny", "DEVICE": "cpu", "BATCH": "2", "OUT": str(tmp_path)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # python3 = this interpreter
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-bench")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = {p.name.split("-", 4)[-1]: p for p in tmp_path.iterdir()}
    gen = json.loads(next(p for n, p in files.items() if n.startswith("generate-tiny")).read_text())
    assert gen["parity"]["ok"] and gen["workload"]["batch"] == 2
    assert {"ours", "hf", "hf_eager", "ratio", "roofline", "ceilings"} <= set(gen)
    assert gen["roofline"]["prefill_gflop"] > 0 and gen["ours"]["samples_s"] > 0
    experts = json.loads(next(p for n, p in files.items() if n.startswith("experts-tiny")).read_text())
    assert experts["results"][0]["K"] == 1 and experts["results"][0]["tokens_equal_to_K1"]
    memory = json.loads(next(p for n, p in files.items() if n == "memory.json").read_text())
    assert [r["K"] for r in memory["expert_parallel_projection"]][:4] == [1, 2, 4, 8]
    reuse = json.loads(next(p for n, p in files.items() if n.startswith("reuse-tiny")).read_text())
    assert [r["workload"]["name"] for r in reuse] == ["mmbench", "pope", "videomme"]
    assert all(r["tokens_equal"] for r in reuse)
    assert len(list(tmp_path.iterdir())) <= 8  # what the device tool brings back
