"""`python -m ernie_vl.bench experts`: per-rank memory and samples/s of expert-parallel replicas, K = 1, 2, ...

Runs K processes (gloo on CPU, NCCL on CUDA) on one machine. Each rank builds the same random weights of the chosen
shape, keeps only its experts, and generates for its share of the W1 workload (image + text prompts, 32 new tokens).
Reports per-rank parameter bytes, peak resident memory, samples/s of the whole replica, and the all-to-all volume
(bytes dispatched per prefill and per decode step), plus a check that the tokens equal the single-process model's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, shape, batch, new_tokens, device, out_dir, placement_name):
    import torch.distributed as dist

    from .generate import _config, workload
    from ..engine import Engine
    from ..generation import GenerationSettings
    from ..expert_parallel import Placement, a2a_bytes, shard_model
    from ..tiny import random_model

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    backend = "nccl" if device == "cuda" else "gloo"
    dev = torch.device(f"cuda:{rank}" if device == "cuda" else "cpu")
    if device == "cuda":
        torch.cuda.set_device(dev)  # NCCL binds each rank to its current device
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = _config(shape)
    # made on the device in its dtype (bfloat16 on CUDA): the 28B shape never exists in float32 on the host
    model = random_model(cfg, torch.bfloat16 if device == "cuda" else torch.float32, dev, seed=0)
    E = cfg.text.moe_num_experts
    placement = (Placement.modality_aware(E, world) if placement_name == "modality-aware" and world > 1
                 else Placement.even(E, world))
    if world > 1:
        shard_model(model, rank, placement, dist.group.WORLD)
    reqs = workload(cfg, batch, seed=0)
    mine = reqs[rank::world]
    engine = Engine(model, group=dist.group.WORLD if world > 1 else None, max_batch_size=len(reqs), reuse=False)
    settings = GenerationSettings(max_new_tokens=new_tokens)
    engine.generate(mine[:1], GenerationSettings(max_new_tokens=2))  # warm-up (every rank has >= 1 request)
    sent0 = a2a_bytes(model) if world > 1 else 0
    dist.barrier()
    t0 = time.perf_counter()
    out = engine.generate(mine, settings)
    dist.barrier()
    elapsed = time.perf_counter() - t0
    rep = {
        "rank": rank,
        "param_gb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "elapsed_s": elapsed,
        "requests": len(mine),
        "tokens": [o.tokens for o in out],
        "a2a_bytes": (a2a_bytes(model) - sent0) if world > 1 else 0,
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rep))
    dist.destroy_process_group()


def run_replica(world: int, shape: str, batch: int, new_tokens: int, device: str, placement: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_rank_main, args=(r, world, port, shape, batch, new_tokens, device, tmp, placement))
                 for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"a rank failed (exit codes {[p.exitcode for p in procs]})")
        reps = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    elapsed = max(r["elapsed_s"] for r in reps)
    tokens = [None] * batch
    for r in reps:
        for i, t in zip(range(r["rank"], batch, world), r["tokens"]):
            tokens[i] = t
    return {
        "K": world, "placement": placement if world > 1 else "single",
        "samples_s": batch / elapsed,
        "per_rank": [{k: r[k] for k in ("rank", "param_gb", "peak_rss_gb", "requests", "a2a_bytes")} for r in reps],
        "tokens": tokens,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", default="tiny", choices=["tiny", "small", "28b"])
    p.add_argument("--ks", default="1,2", help="comma-separated replica sizes")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--placement", default="even", choices=["even", "modality-aware"])
    p.add_argument("--json", type=Path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ernie_vl.bench experts", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def run(a: argparse.Namespace) -> int:
    results = [run_replica(int(k), a.shape, a.batch, a.new_tokens, a.device, a.placement) for k in a.ks.split(",")]
    base = results[0]["tokens"]
    for r in results:
        r["tokens_equal_to_K1"] = r.pop("tokens") == base
    out = {"shape": a.shape, "batch": a.batch, "new_tokens": a.new_tokens, "device": a.device,
           "date": time.strftime("%Y-%m-%d"), "results": results}
    text = json.dumps(out, indent=2)
    print(text)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
