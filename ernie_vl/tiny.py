"""Tiny random checkpoints: `ernie-vl make-tiny DIR` and the embedded default model.

A tiny checkpoint is a complete Hugging Face folder — config.json, generation_config.json, sharded safetensors with
an index, tokenizer.json + tokenizer_config.json, processor configs, chat template and timestamp font — that loads
unchanged in transformers 5.23.0 (`AutoModelForImageTextToText`, `AutoProcessor`) and in `ernie_vl`. Weights are
random but deterministic for a given seed, so two machines build the same "embedded" model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .config import ModelConfig, named_config

TINY_VERSION = "2"  # 2: 32,768 positions (was 4,096)


def _random_value(key: str, shape, g: torch.Generator, device=None) -> torch.Tensor:
    """The random value (float32) of one tensor: the rules every random checkpoint and benchmark model share."""
    kw = {"generator": g, "device": device}
    if key.endswith("e_score_correction_bias"):
        return torch.rand(shape, **kw) * 0.05  # non-zero, so selection-vs-weighting is exercised
    if len(shape) == 1 and ("norm" in key or key.endswith(".ln.weight")) and key.endswith("weight"):
        return 1.0 + 0.1 * torch.randn(shape, **kw)
    if len(shape) >= 2:
        # unit-gain weights (std 1/sqrt(fan_in)) so every layer visibly changes the output and greedy
        # continuations are diverse enough to make token-level parity tests meaningful
        return torch.randn(shape, **kw) / shape[-1] ** 0.5
    return 0.02 * torch.randn(shape, **kw)


def random_state(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random weights (float32) in the fused HF layout."""
    from .weights import expected_tensors

    g = torch.Generator().manual_seed(seed)
    return {key: _random_value(key, shape, g) for key, (shape, _) in expected_tensors(cfg).items()}


def random_model(cfg: ModelConfig, dtype: torch.dtype, device, seed: int = 0):
    """A model of `cfg` with random weights made on `device` directly, tensor by tensor, in `dtype` (routers in
    float32): no float32 copy of the whole model ever exists, so the 28B shape builds on one GPU."""
    from .model import ErnieVLForConditionalGeneration

    device = torch.device(device)
    with torch.device("meta"):
        model = ErnieVLForConditionalGeneration(cfg)
    model.to_dtype(dtype)
    model.to_empty(device=device)
    model.reset_buffers(device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            for dst in (p.unbind(0) if p.dim() == 3 else [p]):  # stacked experts one at a time (less scratch)
                dst.copy_(_random_value(key, dst.shape, g, device))
    return model.eval()


def make_tiny(
    dst: str | Path,
    seed: int = 0,
    config: ModelConfig | None = None,
    layout: str = "hf",
    dtype: torch.dtype = torch.float32,
    max_shard_bytes: int = 256 << 10,
    edit_state=None,
) -> Path:
    """Write a tiny random checkpoint folder (several shards, to exercise the index). Returns `dst`.
    `edit_state(state, dst)`: changes the random weights (fused HF layout, float32) in place before they are written,
    with the tokenizer already in `dst` (tests craft checkpoints that write a chosen text this way)."""
    from .processor_files import write_processor_files
    from .tokenizer_tiny import write_tiny_tokenizer
    from .weight_map import to_original
    from .weights import write_shards

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    ids = write_tiny_tokenizer(dst)
    write_processor_files(dst)
    cfg = config or named_config("tiny")
    if ids["vocab_size"] > cfg.text.vocab_size:
        raise ValueError(f"tokenizer has {ids['vocab_size']} tokens but the config's vocab_size is {cfg.text.vocab_size}")
    for k in ("image_token_id", "image_start_token_id", "image_end_token_id",
              "video_token_id", "video_start_token_id", "video_end_token_id"):
        setattr(cfg, k, ids[k])
    cfg.text.bos_token_id, cfg.text.pad_token_id = ids["bos_token_id"], ids["pad_token_id"]
    cfg.text.eos_token_id = ids["eos_token_id"]

    if layout == "hf":
        (dst / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2) + "\n")
    elif layout == "original":
        (dst / "config.json").write_text(json.dumps(cfg.to_original_dict(), indent=2) + "\n")
    else:
        raise ValueError(f"layout must be 'hf' or 'original', got {layout!r}")
    gen = {
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": sorted({ids["eos_token_id"], ids["end_of_sentence_token_id"]}),
        "pad_token_id": ids["pad_token_id"],
        "do_sample": False,
    }
    (dst / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    state = random_state(cfg, seed)
    if edit_state is not None:
        edit_state(state, dst)
    items = iter(state.items())
    if layout == "original":
        items = to_original(items, cfg.text.moe_num_experts)
    write_shards(items, dst, max_shard_bytes=max_shard_bytes, dtype=dtype)
    return dst


def embedded_checkpoint(name: str, build) -> Path:
    """The folder `name` under $ERNIE_VL_HOME (default ~/.cache/ernie_vl), made once per machine by `build(dst)`:
    built in a temporary folder and renamed into place, so a concurrent builder either wins or finds it finished."""
    home = Path(os.environ.get("ERNIE_VL_HOME", Path.home() / ".cache" / "ernie_vl"))
    path = home / name
    if (path / "config.json").exists() and (path / "model.safetensors.index.json").exists():
        return path
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=home))
    try:
        build(tmp)
        try:
            tmp.rename(path)  # atomic: a concurrent builder either wins or finds the finished folder
        except OSError:
            if not (path / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def default_model_path() -> Path:
    """The embedded random tiny checkpoint (`make_tiny(seed=0)`), built once per machine under $ERNIE_VL_HOME: the
    model of `EvalConfig` / `ServeSettings` without a model and of the tests. (The command line's default is the
    trained demo checkpoint, `ernie_vl.demo_model.demo_model_path`.)"""
    return embedded_checkpoint(f"tiny-v{TINY_VERSION}", lambda dst: make_tiny(dst, seed=0))
