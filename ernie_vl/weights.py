"""Checkpoint I/O: sharded safetensors in both on-disk layouts, strict loading, streaming conversion.

Layouts (model-spec §3):
* "hf" — the fused Hugging Face layout (`save_pretrained(save_original_format=False)`): our module names exactly,
  experts stacked as `[E, 2F, D]` / `[E, D, F]`, routers `[E, D]`, biases `[1, E]`.
* "original" — the hub layout: per-expert 2-D weights numbered 0..2E-1 (first E = text), routers stored transposed
  as `mlp.gate.weight` / `mlp.gate.weight_1`, one `[2, E]` correction bias, `vision_model.` (or
  `model.vision_model.`) prefix, resampler MLPs as `.0/.2/.3`, text under `model.` without `language_model.`.

Key remapping is data (the `_RENAMES` table plus three tensor transforms); loading is strict: every expected tensor
must be found with the right shape, and every checkpoint tensor must be used (names of all offenders are reported).
Tensors are read one at a time from memory-mapped files; expert slices are read with `get_slice`, so converting a
58 GB checkpoint never holds more than one fused tensor in memory. Only safetensors are read — never pickles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
IGNORED_SOURCE = re.compile(r"(^|\.)mtp|rotary_pos_emb\.inv_freq$")


class CheckpointError(ValueError):
    """A checkpoint folder that does not hold the tensors this config needs."""


# ----------------------------------------------------------------------------------------------- reading files
class SafetensorsFolder:
    """Lazy, memory-mapped view of the safetensors files of a checkpoint folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index = self.path / INDEX_NAME
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
        elif (self.path / SINGLE_NAME).exists():
            weight_map = None
        else:
            pickles = sorted(p.name for p in self.path.glob("*.bin")) + sorted(p.name for p in self.path.glob("*.pt"))
            hint = f" (found {pickles}: pickled weights are not loaded; convert them to safetensors)" if pickles else ""
            raise CheckpointError(f"no {INDEX_NAME} or {SINGLE_NAME} in {self.path}{hint}")
        self._handles: dict[str, object] = {}
        if weight_map is None:
            weight_map = {k: SINGLE_NAME for k in self._open(SINGLE_NAME).keys()}
        self.weight_map: dict[str, str] = weight_map
        for f in sorted(set(weight_map.values())):
            if not (self.path / f).exists():
                raise CheckpointError(f"{self.path / INDEX_NAME} names shard {f}, which is missing")

    def _open(self, fname: str):
        if fname not in self._handles:
            self._handles[fname] = safe_open(str(self.path / fname), framework="pt", device="cpu")
        return self._handles[fname]

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def __contains__(self, key: str) -> bool:
        return key in self.weight_map

    def get(self, key: str) -> torch.Tensor:
        return self._open(self.weight_map[key]).get_tensor(key)

    def shape(self, key: str) -> list[int]:
        return list(self._open(self.weight_map[key]).get_slice(key).get_shape())

    def get_row(self, key: str, i: int) -> torch.Tensor:
        """`tensor[i]` without reading the rest of the tensor."""
        return self._open(self.weight_map[key]).get_slice(key)[i : i + 1][0]

    def metadata(self) -> dict:
        first = next(iter(sorted(set(self.weight_map.values()))))
        return self._open(first).metadata() or {}


def detect_layout(keys: list[str]) -> str:
    if any(k.startswith(("vision_model.", "model.vision_model.")) or ".mlp.experts.0." in k for k in keys):
        return "original"
    if any(k.startswith("model.language_model.") for k in keys):
        return "hf"
    raise CheckpointError(
        "cannot tell the checkpoint layout: expected keys under 'model.language_model.' (Hugging Face fused layout) "
        "or 'vision_model.' / 'model.layers.N.mlp.experts.E.' (original layout)"
    )


# ----------------------------------------------------------------------------------------------- name mapping
# (HF fused name pattern, original name pattern) for one-to-one tensors; applied in order, first match wins.
_RENAMES: list[tuple[str, str]] = [
    (r"^model\.vision_tower\.(.*)$", r"vision_model.\1"),
    (r"^model\.resampler_model\.(spatial|temporal)_linear\.fc1\.(.*)$", r"model.resampler_model.\1_linear.0.\2"),
    (r"^model\.resampler_model\.(spatial|temporal)_linear\.fc2\.(.*)$", r"model.resampler_model.\1_linear.2.\2"),
    (r"^model\.resampler_model\.(spatial|temporal)_linear\.ln\.(.*)$", r"model.resampler_model.\1_linear.3.\2"),
    (r"^model\.resampler_model\.(.*)$", r"model.resampler_model.\1"),
    (r"^model\.language_model\.(.*)$", r"model.\1"),
    (r"^lm_head\.weight$", r"lm_head.weight"),
]
_POOL = re.compile(r"^model\.language_model\.layers\.(\d+)\.mlp\.(text|vision)_moe\.(.*)$")


def _rename(hf_key: str) -> str:
    for pat, repl in _RENAMES:
        if re.match(pat, hf_key):
            return re.sub(pat, repl, hf_key)
    raise KeyError(hf_key)


def original_sources(hf_key: str, n_experts: int) -> list[str]:
    """The original-layout tensors one HF tensor is built from (one, or one per expert)."""
    m = _POOL.match(hf_key)
    if not m:
        return [_rename(hf_key)]
    layer, pool, rest = m.groups()
    base = f"model.layers.{layer}.mlp"
    offset = 0 if pool == "text" else n_experts
    if rest == "gate.weight":
        return [f"{base}.gate.weight" + ("" if pool == "text" else "_1")]
    if rest == "gate.moe_statics.e_score_correction_bias":
        return [f"{base}.moe_statics.e_score_correction_bias"]
    if rest == "experts.gate_up_proj":
        return [f"{base}.experts.{offset + e}.{p}.weight" for p in ("gate_proj", "up_proj") for e in range(n_experts)]
    if rest == "experts.down_proj":
        return [f"{base}.experts.{offset + e}.down_proj.weight" for e in range(n_experts)]
    raise KeyError(hf_key)


class _OriginalView:
    """Reads HF-named tensors out of an original-layout folder."""

    def __init__(self, folder: SafetensorsFolder, n_experts: int):
        self.f, self.E = folder, n_experts
        self.vision_prefix = "model.vision_model." if any(k.startswith("model.vision_model.") for k in folder.keys()) else "vision_model."

    def source_keys(self, hf_key: str) -> list[str]:
        keys = original_sources(hf_key, self.E)
        return [self.vision_prefix + k[len("vision_model."):] if k.startswith("vision_model.") else k for k in keys]

    def get(self, hf_key: str, experts: list[int] | None = None) -> torch.Tensor:
        """The HF tensor; for stacked experts optionally only the listed experts (others are not read)."""
        m = _POOL.match(hf_key)
        src = self.source_keys(hf_key)
        if experts is not None and m and m.group(3).startswith("experts."):
            if m.group(3) == "experts.gate_up_proj":
                gate = torch.stack([self.f.get(src[e]) for e in experts])
                up = torch.stack([self.f.get(src[self.E + e]) for e in experts])
                return torch.cat([gate, up], dim=1)
            return torch.stack([self.f.get(src[e]) for e in experts])
        if not m:
            return self.f.get(src[0])
        pool, rest = m.group(2), m.group(3)
        if rest == "gate.weight":
            return self.f.get(src[0]).t().contiguous()  # stored [in, out]
        if rest == "gate.moe_statics.e_score_correction_bias":
            return self.f.get_row(src[0], 0 if pool == "text" else 1)[None].clone()
        if rest == "experts.gate_up_proj":
            gate = torch.stack([self.f.get(k) for k in src[: self.E]])
            up = torch.stack([self.f.get(k) for k in src[self.E :]])
            return torch.cat([gate, up], dim=1)
        return torch.stack([self.f.get(k) for k in src])  # experts.down_proj


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """HF-layout name -> (shape, dtype) of every tensor a checkpoint for `cfg` must provide."""
    from .model import ErnieVLForConditionalGeneration

    with torch.device("meta"):
        model = ErnieVLForConditionalGeneration(cfg)
    out = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def iter_hf_tensors(
    src: str | Path, cfg: ModelConfig, strict: bool = True, expert_subset=None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF name, tensor) for every tensor `cfg` needs, from a folder in either layout, one at a time.

    Missing tensors, wrong shapes and unused checkpoint tensors raise `CheckpointError` listing every offender
    (before any tensor is yielded). `expert_subset(hf_key) -> list[int] | None` restricts stacked expert tensors to
    those experts (an expert-parallel rank reads only its own; the others are never read from disk)."""
    folder = SafetensorsFolder(src)
    layout = detect_layout(folder.keys())
    expected = expected_tensors(cfg)
    E = cfg.text.moe_num_experts
    view = _OriginalView(folder, E) if layout == "original" else None

    def sources(k: str) -> list[str]:
        return view.source_keys(k) if view else [k]

    missing, bad_shape, used = [], [], set()
    for key, (shape, _) in expected.items():
        try:
            srcs = sources(key)
        except KeyError:
            missing.append(key)
            continue
        absent = [s for s in srcs if s not in folder]
        if absent and key.endswith("e_score_correction_bias"):
            continue  # zeros when absent, as the reference initialises it
        if absent:
            missing.extend(absent)
            continue
        used.update(srcs)
        got = _source_shape(folder, key, srcs, layout, E)
        if list(got) != list(shape):
            bad_shape.append(f"{key}: expected {list(shape)}, got {list(got)}")
    unexpected = [
        k for k in folder.keys() if k not in used and not IGNORED_SOURCE.search(k) and not _is_tied_head(k, cfg)
    ]
    if strict and (missing or bad_shape or unexpected):
        parts = [f"checkpoint {folder.path} ({layout} layout) does not match the config:"]
        if missing:
            parts.append(f"missing {len(missing)} tensors: {', '.join(missing)}")
        if bad_shape:
            parts.append(f"wrong shapes: {'; '.join(bad_shape)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors: {', '.join(unexpected)}")
        raise CheckpointError("\n".join(parts))

    for key, (shape, dtype) in expected.items():
        srcs = sources(key)
        if any(s not in folder for s in srcs):
            yield key, torch.zeros(shape, dtype=torch.float32)  # absent correction bias
            continue
        subset = expert_subset(key) if expert_subset is not None else None
        if subset is not None and not subset:
            yield key, torch.empty(0, *shape[1:])
        elif subset is not None:
            yield key, (view.get(key, subset) if view else torch.stack([folder.get_row(key, r) for r in subset]))
        else:
            yield key, (view.get(key) if view else folder.get(key))



def _is_tied_head(key: str, cfg: ModelConfig) -> bool:
    return key == "lm_head.weight" and cfg.tie_word_embeddings


def _source_shape(folder: SafetensorsFolder, key: str, srcs: list[str], layout: str, E: int) -> list[int]:
    if layout == "hf":
        return folder.shape(srcs[0])
    m = _POOL.match(key)
    if not m:
        return folder.shape(srcs[0])
    rest = m.group(3)
    if rest == "gate.weight":
        return folder.shape(srcs[0])[::-1]
    if rest == "gate.moe_statics.e_score_correction_bias":
        return [1, folder.shape(srcs[0])[1]]
    first = folder.shape(srcs[0])
    shapes = {tuple(folder.shape(s)) for s in srcs}
    if len(shapes) != 1:
        return [len(srcs), -1, -1]
    if rest == "experts.gate_up_proj":
        return [E, 2 * first[0], first[1]]
    return [E, *first]


# ----------------------------------------------------------------------------------------------- HF -> original
def to_original(items: Iterator[tuple[str, torch.Tensor]], n_experts: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Turn a stream of HF-layout tensors into original-layout tensors (the inverse of `_OriginalView.get`)."""
    pending_bias: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in items:
        m = _POOL.match(key)
        if not m:
            yield _rename(key), t
            continue
        layer, pool, rest = m.groups()
        base = f"model.layers.{layer}.mlp"
        offset = 0 if pool == "text" else n_experts
        if rest == "gate.weight":
            yield original_sources(key, n_experts)[0], t.t().contiguous()
        elif rest == "gate.moe_statics.e_score_correction_bias":
            slot = pending_bias.setdefault(layer, {})
            slot[pool] = t
            if len(slot) == 2:
                yield f"{base}.moe_statics.e_score_correction_bias", torch.cat([slot["text"], slot["vision"]])
                del pending_bias[layer]
        elif rest == "experts.gate_up_proj":
            gate, up = t.chunk(2, dim=1)
            for e in range(n_experts):
                yield f"{base}.experts.{offset + e}.gate_proj.weight", gate[e].contiguous()
                yield f"{base}.experts.{offset + e}.up_proj.weight", up[e].contiguous()
        else:
            for e in range(n_experts):
                yield f"{base}.experts.{offset + e}.down_proj.weight", t[e].contiguous()
    if pending_bias:
        raise CheckpointError(f"correction bias of only one pool for layers {sorted(pending_bias)}")


# ----------------------------------------------------------------------------------------------- writing
def write_shards(
    items: Iterator[tuple[str, torch.Tensor]],
    dst: str | Path,
    max_shard_bytes: int = 2 << 30,
    dtype: torch.dtype | None = None,
) -> Path:
    """Stream tensors into `model-0000i-of-0000n.safetensors` files plus the index; returns the index path."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    sizes = [0]
    names: list[str] = []
    tmp_names = []

    def flush() -> None:
        name = f"model-{len(tmp_names) + 1:05d}.tmp.safetensors"
        save_file(shards[-1], str(dst / name), metadata={"format": "pt"})
        tmp_names.append((name, list(shards[-1])))
        shards[-1] = {}
        sizes[-1] = 0

    total = 0
    for key, t in items:
        keep32 = ".gate." in key or "moe_statics" in key
        if dtype is not None and t.is_floating_point() and not keep32:
            t = t.to(dtype)
        nbytes = t.numel() * t.element_size()
        if sizes[-1] and sizes[-1] + nbytes > max_shard_bytes:
            flush()
        shards[-1][key] = t.contiguous()
        sizes[-1] += nbytes
        total += nbytes
        names.append(key)
    if shards[-1] or not tmp_names:
        flush()
    n = len(tmp_names)
    weight_map = {}
    for i, (tmp, keys) in enumerate(tmp_names, start=1):
        final = f"model-{i:05d}-of-{n:05d}.safetensors"
        (dst / tmp).rename(dst / final)
        weight_map.update({k: final for k in keys})
    index = dst / INDEX_NAME
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return index


def save_model(model, dst: str | Path, layout: str = "hf", max_shard_bytes: int = 2 << 30) -> Path:
    """Write a model's weights (not its config) in the given layout."""
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    items = iter(state.items())
    if layout == "original":
        items = to_original(items, model.config.text.moe_num_experts)
    elif layout != "hf":
        raise ValueError(f"layout must be 'hf' or 'original', got {layout!r}")
    return write_shards(items, dst, max_shard_bytes)


# ----------------------------------------------------------------------------------------------- loading
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {dtype}")
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto'") from None


def resolve_device(device) -> torch.device:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA devices exist")
    return dev


def load_model(
    path: str | Path | None = None, *, dtype=None, device=None, strict: bool = True, expert_subset=None, prepare=None
):
    """Build the model on the meta device and fill it tensor by tensor from a checkpoint folder (either layout).

    `path=None` loads the embedded tiny checkpoint. `dtype=None`/"auto" keeps the checkpoint's dtype (routers and
    correction biases always stay float32). Returns the model in eval mode.
    `prepare(model)` may swap modules on the meta model before loading and `expert_subset` restricts which experts
    are read (both used by expert-parallel shards, see `expert_parallel.load_sharded_model`)."""
    from .model import ErnieVLForConditionalGeneration
    from .tiny import default_model_path

    path = Path(path) if path is not None else default_model_path()
    cfg = ModelConfig.from_file(path)
    want = resolve_dtype(dtype)
    dev = resolve_device(device)
    with torch.device("meta"):
        model = ErnieVLForConditionalGeneration(cfg)
    if prepare is not None:
        prepare(model)
    modules = dict(model.named_modules())
    for key, t in iter_hf_tensors(path, cfg, strict=strict, expert_subset=expert_subset):
        if want is None and key == "model.language_model.embed_tokens.weight":
            want_auto = t.dtype
        keep32 = ".gate." in key
        target = torch.float32 if keep32 else (want or t.dtype)
        mod_name, _, pname = key.rpartition(".")
        setattr(modules[mod_name], pname, torch.nn.Parameter(t.to(device=dev, dtype=target), requires_grad=False))
    if want is None:  # "auto": one dtype for the whole model, the checkpoint's embedding dtype
        model.to_dtype(want_auto)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    model.reset_buffers(dev)
    return model.eval()
