"""`ernie-vl convert SRC DST`: original hub layout <-> fused Hugging Face layout, streaming tensor by tensor.

Both directions read the rule table of `weight_map.py`: original -> hf through `weights.iter_hf_tensors` (the table's
forward transforms, with the same strict checks as loading), hf -> original through `weight_map.to_original` (its
inverse transforms). Config, tokenizer, processor and generation files are carried over (config.json rewritten in
the target format).
Peak memory is one fused expert tensor (e.g. 64 x 3072 x 2560 bf16 = 1 GB at the 28B shape), not the checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .config import ModelConfig
from .weight_map import to_original
from .weights import SafetensorsFolder, detect_layout, iter_hf_tensors, resolve_dtype, write_shards

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def convert(
    src: str | Path,
    dst: str | Path,
    to: str | None = None,
    dtype=None,
    max_shard_bytes: int = 4 << 30,
    config_format: str | None = None,
) -> str:
    """Convert `src` into `dst` in layout `to` ("hf" or "original"; default: the other one). Returns the layout.

    `config_format` ("hf" | "original", default: same as `to`) picks the config.json format; "hf" with original
    weights gives the hub's current arrangement (an HF config.json beside per-expert weights)."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError("SRC and DST must be different folders")
    cfg = ModelConfig.from_file(src)
    layout = detect_layout(SafetensorsFolder(src).keys())
    to = to or ("hf" if layout == "original" else "original")
    if to not in ("hf", "original"):
        raise ValueError(f"target layout must be 'hf' or 'original', got {to!r}")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in _WEIGHT_FILES and not f.name.endswith(".safetensors") and f.name != "config.json":
            shutil.copy2(f, dst / f.name)
    config_format = config_format or to
    if config_format not in ("hf", "original"):
        raise ValueError(f"config format must be 'hf' or 'original', got {config_format!r}")
    cfg_dict = cfg.to_hf_dict() if config_format == "hf" else cfg.to_original_dict()
    (dst / "config.json").write_text(json.dumps(cfg_dict, indent=2) + "\n")
    items = iter_hf_tensors(src, cfg)
    if to == "original":
        items = to_original(items, cfg.text.moe_num_experts)
    write_shards(items, dst, max_shard_bytes=max_shard_bytes, dtype=resolve_dtype(dtype))
    return to
