"""`python -m ernie_vl.bench generate`: our engine vs transformers 5.23.0 on the W1 image-MCQ workload.

W1 (docs/performance.md of the shared brief): per sample 64 text tokens, <|IMAGE_START|>, one 448x448 image
(32x32 patches -> 256 tokens), <|IMAGE_END|>, 32 text tokens = 354 prompt tokens; 32 generated tokens, greedy,
forced to full length. Random weights of the chosen shape are built in-process (no download), loaded into both
implementations, and the same inputs go through ours and through transformers (`grouped_mm` experts and the default
eager loop) in one run. Greedy tokens must agree first (fp32: exactly; bf16: the reference's token must be within our
top-k) or no speed is reported.

Output JSON: {"ours": {...}, "hf": {...}, "hf_eager": {...}, "ratio": {...}, "parity": {...}, "machine": {...}}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from .config import named_config
from .engine import Engine, GenerationSettings, Prepared
from .model import ErnieVLForConditionalGeneration
from .tiny import random_state

TEXT_BEFORE, TEXT_AFTER, IMAGE_GRID, NEW_TOKENS = 64, 32, (1, 32, 32), 32
SHAPES = {"tiny": "tiny", "small": "small", "28b": "28b-a3b"}


def _config(shape: str):
    cfg = named_config(SHAPES[shape])
    V = cfg.text.vocab_size
    # special ids at the top of the vocabulary, as in the real tokenizer
    cfg.image_token_id, cfg.image_start_token_id, cfg.image_end_token_id = V - 6, V - 5, V - 4
    cfg.video_token_id, cfg.video_start_token_id, cfg.video_end_token_id = V - 3, V - 2, V - 1
    return cfg


def workload(cfg, batch: int, seed: int = 0) -> list[Prepared]:
    g = torch.Generator().manual_seed(seed)
    n_img = IMAGE_GRID[1] * IMAGE_GRID[2] // 4
    reqs = []
    for _ in range(batch):
        ids = torch.cat([
            torch.randint(10, cfg.text.vocab_size - 16, (TEXT_BEFORE,), generator=g),
            torch.tensor([cfg.image_start_token_id] + [cfg.image_token_id] * n_img + [cfg.image_end_token_id]),
            torch.randint(10, cfg.text.vocab_size - 16, (TEXT_AFTER,), generator=g),
        ])
        pix = torch.randn(IMAGE_GRID[1] * IMAGE_GRID[2], 588, generator=g)
        reqs.append(Prepared(ids, pixel_values=pix, image_grid_thw=torch.tensor([IMAGE_GRID])))
    return reqs


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gb(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None


def build_models(cfg, dtype, device, with_hf: bool):
    state = random_state(cfg, seed=0)
    ours = ErnieVLForConditionalGeneration(cfg)
    ours.load_state_dict(state, strict=False)
    ours = ours.to(device).to_dtype(dtype).eval()
    ref = None
    if with_hf:
        from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration

        hcfg = Ernie4_5_VLMoeConfig(**cfg.to_hf_dict())
        ref = Ernie4_5_VLMoeForConditionalGeneration(hcfg)
        ref.load_state_dict(state, strict=False)
        ref = ref.to(device=device, dtype=dtype).eval()
        for name, p in ref.named_parameters():  # the reference keeps routers in float32 too
            if ".gate." in name:
                p.data = p.data.float()
    del state
    return ours, ref


def run_ours(model, reqs, device, repeats: int) -> tuple[dict, list[list[int]]]:
    engine = Engine(model, max_batch_size=len(reqs), max_batch_tokens=1 << 30)
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS)
    engine.generate(reqs[:1], GenerationSettings(max_new_tokens=2))  # warm-up
    best = None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = engine.generate(reqs, GenerationSettings(max_new_tokens=1))
        _sync(device)
        t_prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = engine.generate(reqs, settings)
        _sync(device)
        t_total = time.perf_counter() - t0
        if best is None or t_total < best[1]:
            best = (t_prefill, t_total, out)
    return _figures(len(reqs), reqs, *best[:2], device), [o.tokens for o in best[2]]


def _hf_inputs(cfg, reqs):
    from .engine import collate
    from .positions import token_types

    kw = collate(reqs)
    mm, moe = token_types(kw["input_ids"], cfg)
    return {**kw, "mm_token_type_ids": mm, "moe_mm_token_type_ids": moe}


def run_hf(ref, cfg, reqs, device, impl: str, repeats: int) -> tuple[dict, list[list[int]]]:
    for c in (ref.config, ref.config.text_config):  # read by every experts module at call time
        c._experts_implementation = impl
    kw = {k: v.to(device) for k, v in _hf_inputs(cfg, reqs).items()}
    S = kw["input_ids"].shape[1]

    def gen(n):
        with torch.inference_mode():
            return ref.generate(**kw, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    gen(2)
    best = None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        gen(1)
        _sync(device)
        t_prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = gen(NEW_TOKENS)
        _sync(device)
        t_total = time.perf_counter() - t0
        if best is None or t_total < best[1]:
            best = (t_prefill, t_total, out)
    return _figures(len(reqs), reqs, *best[:2], device), best[2][:, S:].tolist()


def _figures(batch, reqs, t_prefill, t_total, device) -> dict:
    prompt_tokens = sum(r.num_prompt_tokens for r in reqs)
    decode_time = max(t_total - t_prefill, 1e-9)
    return {
        "prefill_s": t_prefill,
        "generate_s": t_total,
        "prefill_tok_s": prompt_tokens / t_prefill,
        "decode_tok_s": batch * (NEW_TOKENS - 1) / decode_time,
        "samples_s": batch / t_total,
        "peak_mem_gb": _peak_gb(device),
    }


def ceilings(device, dtype) -> dict:
    """Measured matmul TFLOP/s and copy GB/s of this device (short probes)."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    reps = 10 if device.type == "cuda" else 3
    for _ in range(reps):
        a @ b
    _sync(device)
    tflops = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
    x = torch.empty(64 << 20 if device.type == "cuda" else 8 << 20, device=device, dtype=torch.uint8)
    y = torch.empty_like(x)
    y.copy_(x)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        y.copy_(x)
    _sync(device)
    gbs = 2 * x.numel() * reps / (time.perf_counter() - t0) / 1e9
    return {"matmul_tflops": tflops, "copy_gb_s": gbs}


def check_parity(ours_tokens, ref_tokens, dtype) -> dict:
    same = sum(a == b for a, b in zip(ours_tokens, ref_tokens))
    first_diff = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None) for a, b in zip(ours_tokens, ref_tokens)]
    return {"rows_identical": same, "rows": len(ours_tokens), "first_divergence": first_diff,
            "ok": same == len(ours_tokens) if dtype == torch.float32 else all(d is None or d >= 8 for d in first_diff)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--compare", choices=["hf", "none"], default="hf")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ernie_vl.bench generate", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def run(a: argparse.Namespace) -> int:
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(a.dtype or "", None)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    cfg = _config(a.shape)
    torch.manual_seed(0)
    ours, ref = build_models(cfg, dtype, device, a.compare == "hf")
    reqs = workload(cfg, a.batch)
    result = {
        "workload": {"shape": a.shape, "batch": a.batch, "prompt_tokens": reqs[0].num_prompt_tokens,
                     "new_tokens": NEW_TOKENS, "dtype": str(dtype).replace("torch.", ""), "device": str(device)},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                    "date": time.strftime("%Y-%m-%d")},
        "ceilings": ceilings(device, dtype),
    }
    ours_fig, ours_tok = run_ours(ours, reqs, device, a.repeats)
    result["ours"] = ours_fig
    if ref is not None:
        hf_fig, hf_tok = run_hf(ref, cfg, reqs, device, "grouped_mm", a.repeats)
        result["parity"] = check_parity(ours_tok, hf_tok, dtype)
        if not result["parity"]["ok"]:
            result.pop("ours")
            result["error"] = "greedy tokens differ from the reference: speed not reported"
        else:
            result["hf"] = hf_fig
            result["hf_eager"], _ = run_hf(ref, cfg, reqs, device, "eager", a.repeats)
            result["ratio"] = {
                "prefill": ours_fig["prefill_tok_s"] / hf_fig["prefill_tok_s"],
                "decode": ours_fig["decode_tok_s"] / hf_fig["decode_tok_s"],
                "samples": ours_fig["samples_s"] / hf_fig["samples_s"],
                "samples_vs_eager": ours_fig["samples_s"] / result["hf_eager"]["samples_s"],
            }
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text + "\n")
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    raise SystemExit(main())
