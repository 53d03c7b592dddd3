"""`python -m ernie_vl.bench reuse` at the tiny shape: the workloads repeat media as described, the three runs give
the same greedy tokens, and the reuse counters show what was not recomputed (speed is not asserted: a benchmark
reports it)."""

import json

import torch

from ernie_vl.bench import reuse
from ernie_vl.bench.generate import _config
from ernie_vl.bench.__main__ import main


def test_workloads_repeat_media_as_the_benchmarks_do():
    cfg = _config("tiny")
    for name, w in reuse.WORKLOADS.items():
        reqs, new = reuse.workload(cfg, name)
        keys = [x.media_bounds()[0][2] for x in reqs]
        assert len(reqs) == w["groups"] * w["questions"] and len(set(keys)) == w["groups"], name
        assert keys[: w["groups"]] == list(dict.fromkeys(keys)), name  # listed question by question, media apart
        t, h, wd = w["grid"]
        assert reqs[0].num_visual_tokens == t * h * wd // (4 if w["kind"] == "image" else 8)


def test_reuse_benchmark_runs_and_agrees(tmp_path, capsys):
    out = tmp_path / "reuse.json"
    threads = torch.get_num_threads()
    try:
        rc = main(["reuse", "--shape", "tiny", "--workload", "mmbench", "--workload", "pope", "--repeats", "1",
                   "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    results = json.loads(out.read_text())
    assert [r["workload"]["name"] for r in results] == ["mmbench", "pope"]
    for r in results:
        assert r["tokens_equal"] and {"with_reuse", "without_reuse", "hf", "ratio"} <= set(r)
        w, wo = r["with_reuse"], r["without_reuse"]
        assert w["media_encoded"] == r["workload"]["groups"] and wo["media_reused"] == 0
        assert w["prefix_tokens_reused"] > 0 and wo["prefix_tokens_reused"] == 0
        assert r["ratio"]["vs_without"] > 0 and r["ratio"]["vs_hf"] > 0
