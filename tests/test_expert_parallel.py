"""Expert parallelism on CPU: 2 ranks (gloo), tiny checkpoint, fp32, against the single-process model.

Each rank runs a different batch (rank 0 text-only, rank 1 images and videos) so that the ranks exchange tokens of
pools the other rank does not use itself; a second scenario gives one rank no requests at all.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from ernie_vl.expert_parallel import Placement
from serve_support import free_port



def _requests(model, kind: str, g):
    from ernie_vl.inputs import ModelInputs

    c = model.config
    reqs = []
    specs = {"text": [(9, None), (5, None)], "vision": [(4, ("image", [1, 4, 4])), (3, ("video", [4, 2, 4])),
                                                        (6, ("image", [1, 2, 6]))]}[kind]
    for n, vis in specs:
        ids = torch.randint(20, 500, (n,), generator=g)
        kw = {}
        if vis and vis[0] == "image":
            t, h, w = vis[1]
            body = [c.image_start_token_id] + [c.image_token_id] * (h * w // 4) + [c.image_end_token_id]
            kw = {"pixel_values": torch.randn(h * w, 588, generator=g), "image_grid_thw": torch.tensor([vis[1]])}
        elif vis:
            t, h, w = vis[1]
            body = [c.video_start_token_id] + [c.video_token_id] * (t * h * w // 8) + [c.video_end_token_id]
            kw = {"pixel_values_videos": torch.randn(t * h * w, 588, generator=g), "video_grid_thw": torch.tensor([vis[1]])}
        else:
            body = []
        reqs.append(ModelInputs.build(torch.cat([ids, torch.tensor(body, dtype=torch.long), ids[:2]]), c, **kw))
    return reqs


def _worker(rank: int, world: int, port: int, ckpt: str, plan: str, out_dir: str) -> None:
    import torch.distributed as dist

    import ernie_vl
    from ernie_vl.engine import Engine
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.inputs import ModelBatch
    from ernie_vl.expert_parallel import expert_load, load_sharded_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    full = ernie_vl.load_model(ckpt)
    E = full.config.text.moe_num_experts
    placement = Placement.even(E, world) if plan == "even" else Placement.modality_aware(E, world, vision_ranks=1)
    shard = load_sharded_model(ckpt, rank, placement)
    report = {"rank": rank}

    g = torch.Generator().manual_seed(100 + rank)
    reqs = _requests(full, "text" if rank == 0 else "vision", g)
    kw = ModelBatch.collate(reqs).transformers_kwargs()
    with torch.no_grad():
        a = shard(**kw).logits
        b = full(**kw).logits
    real = kw["attention_mask"].bool()
    report["logits_max_diff"] = (a - b).abs()[real].max().item()
    report["logits_equal"] = bool(torch.equal(a[real], b[real]))

    settings = GenerationSettings(max_new_tokens=8)
    ours = Engine(shard, group=dist.group.WORLD).generate(reqs, settings)
    ref = Engine(full).generate(reqs, settings)
    report["tokens_equal"] = [o.tokens == r.tokens for o, r in zip(ours, ref)]

    # scenario 2: rank 0 has nothing to do; rank 1 stops one request early (EOS) while the other goes on
    # every rank runs its decode step at every lockstep step (same shapes, so graph captures happen together)
    from ernie_vl.decode_step import DecodeStep

    steps, step_call = [0], DecodeStep.__call__
    DecodeStep.__call__ = lambda self, n: steps.__setitem__(0, steps[0] + 1) or step_call(self, n)
    mine = [] if rank == 0 else reqs[:2]
    eos = ref[0].tokens[2] if rank == 1 else -1
    ours2 = Engine(shard, group=dist.group.WORLD, decode="static").generate(
        mine, GenerationSettings(max_new_tokens=8, eos_token_id=(eos,)))
    DecodeStep.__call__ = step_call
    report["decode_steps_scenario2"] = steps[0]
    ref2 = Engine(full).generate(mine, GenerationSettings(max_new_tokens=8, eos_token_id=(eos,)))
    report["idle_rank_tokens_equal"] = [o.tokens == r.tokens for o, r in zip(ours2, ref2)]
    report["n_scenario2"] = len(mine)

    # scenario 3: one decode step through the fixed-size exchange (what a CUDA graph captures; the lockstep engine
    # above ran its decode steps so) equals the data-sized exchange and the full model, and reads nothing back
    from torch.utils._python_dispatch import TorchDispatchMode

    from ernie_vl.decode_step import decode_slots
    from ernie_vl.expert_parallel import fixed_exchange
    from ernie_vl.inputs import ModelBatch as Batch

    class Reads(TorchDispatchMode):
        """Dispatched ops, plus Tensor.tolist/.item calls (on CPU tolist reads memory without dispatching)."""

        ops: set = set()

        def __enter__(self):
            self._saved = torch.Tensor.tolist, torch.Tensor.item
            for name, orig in zip(("tolist", "item"), self._saved):
                setattr(torch.Tensor, name, lambda t, *a, _o=orig, _n=name: self.ops.add(_n) or _o(t, *a))
            return super().__enter__()

        def __exit__(self, *exc):
            torch.Tensor.tolist, torch.Tensor.item = self._saved
            return super().__exit__(*exc)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    batch = Batch.collate(reqs)
    B, S = batch.shape
    step_logits = {}
    for name, model, fixed in (("full", full, False), ("sharded", shard, False), ("fixed", shard, True)):
        cache = model.new_cache(B, S + 1)
        with torch.inference_mode():
            model.prefill(batch, cache)
            args = (torch.arange(B) + 5, batch.next_positions[:, :, None], cache, torch.full((B,), S), S + 1)
            if fixed:
                with fixed_exchange(model, 3), Reads() as reads:  # 3 = the busier rank's rows: the same on both
                    step_logits[name] = decode_slots(model, *args)
            else:
                step_logits[name] = decode_slots(model, *args)
    report["fixed_vs_sized"] = (step_logits["fixed"] - step_logits["sharded"]).abs().max().item()
    report["fixed_vs_full"] = (step_logits["fixed"] - step_logits["full"]).abs().max().item()
    report["fixed_host_reads"] = sorted(reads.ops & {"aten._local_scalar_dense", "aten.nonzero", "tolist", "item"})
    report["expert_load"] = expert_load(shard)
    report["local_experts"] = {p: placement.local(p, rank) for p in ("text", "vision")}
    report["param_bytes"] = sum(p.numel() * p.element_size() for p in shard.parameters())
    report["full_param_bytes"] = sum(p.numel() * p.element_size() for p in full.parameters())
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.subprocess
@pytest.mark.parametrize("plan", ["even", "modality-aware"])
def test_two_rank_replica_equals_single_process(tiny_dir, tmp_path, plan):
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(tiny_dir), plan, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0], "a rank failed or hung (see captured stderr)"
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rep in reports:
        assert rep["logits_max_diff"] <= 1e-5, rep
        assert all(rep["tokens_equal"]), rep
        assert all(rep["idle_rank_tokens_equal"]), rep
        assert rep["param_bytes"] < rep["full_param_bytes"]
        assert rep["fixed_vs_sized"] <= 1e-5 and rep["fixed_vs_full"] <= 1e-5, rep
        assert rep["fixed_host_reads"] == [], rep
    assert reports[0]["n_scenario2"] == 0 and reports[1]["n_scenario2"] == 2
    assert reports[0]["decode_steps_scenario2"] == reports[1]["decode_steps_scenario2"] == 7  # the idle rank too
    # each expert lives on exactly one rank
    for pool in ("text", "vision"):
        owned = sorted(reports[0]["local_experts"][pool] + reports[1]["local_experts"][pool])
        assert owned == list(range(8))
    if plan == "modality-aware":
        assert reports[0]["local_experts"]["vision"] == [] and len(reports[1]["local_experts"]["vision"]) == 8
        # rank 0 holds no vision expert yet its image-free batch and rank 1's visual tokens were served
        assert sum(reports[1]["expert_load"]["vision"]) > 0


def test_placement_from_measured_load_balances():
    load = {"text": [100, 90, 10, 5, 50, 40, 30, 20], "vision": [1] * 8}
    p = Placement.from_load(load, world=2)
    per_rank = [sum(l for e, l in enumerate(load["text"]) if p.owners["text"][e] == r) for r in range(2)]
    assert abs(per_rank[0] - per_rank[1]) <= 10
    assert sorted(p.owners["text"]).count(0) == 4  # equal expert counts keep memory even
    with pytest.raises(ValueError, match="vision_ranks"):
        Placement.modality_aware(8, 2, vision_ranks=3)
