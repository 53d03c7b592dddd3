"""`python -m ernie_vl.bench reuse`: what computing each medium and each shared prompt prefix once saves.

Three synthetic workloads shaped like the benchmarks that repeat media (random weights of the chosen shape, random
pixels and token ids, greedy, forced to full length):
* mmbench: per question one 448x448 image (256 tokens), ≈60 hint + question tokens, then ≈40 tokens of options
  rotated 4 times (VLMEvalKit's circular evaluation), 8 new tokens;
* videomme: per video 16 frames of 448x252 (1,152 tokens), 3 questions of ≈50 tokens after it, 8 new tokens;
* pope: per image (448x448) 6 yes/no questions of ≈20 tokens after it, 4 new tokens.
Each runs in one process through ours with reuse (feature cache + shared-prefix prefill), ours without, and
transformers 5.23.0 with `grouped_mm` experts one sample at a time, as a harness sends them. Greedy tokens must agree
before any speed is reported (`generate.check_parity`: float32 exactly; bfloat16 as judged by the reference model).

Output JSON: {"workload", "with_reuse": {...}, "without_reuse": {...}, "hf": {...}, "ratio": {"vs_without",
"vs_hf"}, "tokens_equal", "machine"}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..engine import Engine
from ..generation import GenerationSettings
from ..inputs import ModelInputs
from .generate import SHAPES, _hf_inputs, _sync, best_of, check_parity, machine, setup

WORKLOADS = {  # media per sample group, questions per medium, text before/after the medium, options, new tokens
    "mmbench": dict(kind="image", grid=(1, 32, 32), groups=4, questions=4, before=0, shared_after=60, own=40, new=8),
    "videomme": dict(kind="video", grid=(16, 18, 32), groups=3, questions=3, before=8, shared_after=0, own=50, new=8),
    "pope": dict(kind="image", grid=(1, 32, 32), groups=3, questions=6, before=0, shared_after=4, own=16, new=4),
}


def workload(cfg, name: str, seed: int = 0) -> tuple[list[ModelInputs], int]:
    """The requests of a workload, in a harness's order (mmbench: rotation-major; others: question-major)."""
    w = WORKLOADS[name]
    g = torch.Generator().manual_seed(seed)
    V = cfg.text.vocab_size
    text = lambda n: torch.randint(10, V - 16, (n,), generator=g).tolist()  # noqa: E731
    t, h, wd = w["grid"]
    if w["kind"] == "image":
        ids = [cfg.image_start_token_id] + [cfg.image_token_id] * (h * wd // 4) + [cfg.image_end_token_id]
    else:
        ids = [cfg.video_start_token_id] + [cfg.video_token_id] * (t * h * wd // 8) + [cfg.video_end_token_id]
    groups = []
    for _ in range(w["groups"]):
        pix = torch.randn(t * h * wd, 588, generator=g)
        head = text(w["before"]) + ids + text(w["shared_after"])
        if name == "mmbench":  # one question, its options rotated
            options = [text(w["own"] // 4) for _ in range(4)]
            tails = [[tok for opt in options[r:] + options[:r] for tok in opt] for r in range(w["questions"])]
        else:
            tails = [text(w["own"]) for _ in range(w["questions"])]
        groups.append([(head + tail, pix) for tail in tails])
    order = [grp[q] for q in range(w["questions"]) for grp in groups]  # a harness lists samples, not groups
    grid = torch.tensor([[t, h, wd]])
    media = (lambda p: {"pixel_values": p, "image_grid_thw": grid}) if w["kind"] == "image" else (
        lambda p: {"pixel_values_videos": p, "video_grid_thw": grid})
    return [ModelInputs.build(torch.tensor(i), cfg, **media(p)) for i, p in order], w["new"]


def _ours(model, reqs, new_tokens, device, reuse: bool):
    settings = GenerationSettings(max_new_tokens=new_tokens)

    def once():
        engine = Engine(model, max_batch_size=len(reqs), max_batch_tokens=1 << 30, reuse=reuse)  # a cold cache
        _sync(device)
        t0 = time.perf_counter()
        out = engine.generate(reqs, settings)
        _sync(device)
        total = time.perf_counter() - t0
        stats = {k: engine.stats.get(k, 0) for k in ("media_encoded", "media_reused", "prompt_tokens",
                                                      "prefix_tokens_reused")}
        return {"samples_s": len(reqs) / total, "generate_s": total, **stats}, [o.tokens for o in out]

    once()  # warm-up
    return once


def _hf(ref, cfg, reqs, new_tokens, device):
    inputs = [{k: v.to(device) for k, v in _hf_inputs(cfg, [r]).items()} for r in reqs]
    for c in (ref.config, ref.config.text_config):
        c._experts_implementation = "grouped_mm"

    def once():
        tokens = []
        _sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for kw in inputs:
                out = ref.generate(**kw, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                   pad_token_id=0)
                tokens.append(out[0, kw["input_ids"].shape[1]:].tolist())
        _sync(device)
        total = time.perf_counter() - t0
        return {"samples_s": len(reqs) / total, "generate_s": total}, tokens

    once()  # warm-up
    return once


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--workload", choices=sorted(WORKLOADS), action="append",
                   help="repeatable; default: all three")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--compare", choices=["hf", "none"], default="hf")
    p.add_argument("--repeats", type=int, default=2, help="runs per implementation, alternated; the fastest is kept")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the results here (a list, one per workload)")


def run(a: argparse.Namespace) -> int:
    device, dtype, cfg, ours, ref = setup(a)
    results, failed = [], False
    for name in a.workload or sorted(WORKLOADS):
        reqs, new_tokens = workload(cfg, name)
        result = {"workload": {"name": name, "shape": a.shape, "samples": len(reqs), "new_tokens": new_tokens,
                               "prompt_tokens": sum(r.num_prompt_tokens for r in reqs),
                               "dtype": str(dtype).replace("torch.", ""), "device": str(device), **WORKLOADS[name]},
                  "machine": machine(device)}
        runners = {"with_reuse": _ours(ours, reqs, new_tokens, device, True),
                   "without_reuse": _ours(ours, reqs, new_tokens, device, False)}
        if ref is not None:
            runners["hf"] = _hf(ref, cfg, reqs, new_tokens, device)
        tokens = {k: once()[1] for k, once in runners.items()}
        parity = check_parity(tokens, dtype, ref, cfg, reqs, device)
        result["parity"] = parity
        result["tokens_equal"] = parity["tokens_equal"]
        if not parity["ok"]:
            result["error"] = f"greedy tokens disagree ({parity['rule']}): speed not reported"
            failed = True
        else:
            best = best_of(runners, a.repeats)
            for k in runners:
                result[k] = best[k][0]
            result["ratio"] = {"vs_without": result["with_reuse"]["samples_s"] / result["without_reuse"]["samples_s"]}
            if "hf" in result:
                result["ratio"]["vs_hf"] = result["with_reuse"]["samples_s"] / result["hf"]["samples_s"]
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0
