"""Checkpoint I/O: sharded safetensors in both on-disk layouts, strict loading, streaming conversion.

Layouts (model-spec §3):
* "hf" — the fused Hugging Face layout (`save_pretrained(save_original_format=False)`): our module names exactly,
  experts stacked as `[E, 2F, D]` / `[E, D, F]`, routers `[E, D]`, biases `[1, E]`.
* "original" — the hub layout: per-expert 2-D weights numbered 0..2E-1 (first E = text), routers stored transposed
  as `mlp.gate.weight` / `mlp.gate.weight_1`, one `[2, E]` correction bias, `vision_model.` (or
  `model.vision_model.`) prefix, resampler MLPs as `.0/.2/.3`, text under `model.` without `language_model.`.

Key remapping is data (the rule tables of `weight_map.py`: names, transforms and shape rules of both layouts); loading
is strict: every expected tensor must be found with the right shape, and every checkpoint tensor must be used (names
of all offenders are reported).
Tensors are read one at a time from memory-mapped files; expert slices are read with `get_slice`, so converting a
58 GB checkpoint never holds more than one fused tensor in memory. Only safetensors are read — never pickles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .weight_map import CheckpointError, Names, Part, keep_float32, lookup, pool_of  # noqa: F401 - CheckpointError is public here

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
IGNORED_SOURCE = re.compile(r"(^|\.)mtp|rotary_pos_emb\.inv_freq$")


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


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """HF-layout name -> (shape, dtype) of every tensor a checkpoint for `cfg` must provide."""
    from .model import ErnieVLForConditionalGeneration

    with torch.device("meta"):
        model = ErnieVLForConditionalGeneration(cfg)
    out = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def _part_shape(folder: SafetensorsFolder, part: Part) -> list[int] | None:
    full = folder.shape(part.key)
    if part.row is None:
        return full
    return full[1:] if full and full[0] == part.rows else None  # a row of a tensor stacking `rows` of them


def _read(folder: SafetensorsFolder, part: Part) -> torch.Tensor:
    return folder.get(part.key) if part.row is None else folder.get_row(part.key, part.row)


def iter_hf_tensors(
    src: str | Path, cfg: ModelConfig, strict: bool = True, expert_subset: Mapping[str, Sequence[int]] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF name, tensor) for every tensor `cfg` needs, from a folder in either layout, one at a time.

    Names, transforms and shapes come from the `weight_map` table of the folder's layout. Missing tensors, wrong
    shapes and unused checkpoint tensors raise `CheckpointError` listing every offender (before any tensor is
    yielded). `expert_subset` ({"text": [experts], "vision": [...]}) restricts the stacked expert tensors of those
    pools to the listed experts, in that order (an expert-parallel rank reads only its own; the others are never
    read from disk)."""
    folder = SafetensorsFolder(src)
    layout = detect_layout(folder.keys())
    expected = expected_tensors(cfg)
    hf_saved = any(k.startswith("model.vision_model.") for k in folder.keys())  # transformers' original-format save
    names = Names(cfg.text.moe_num_experts, "model.vision_model." if hf_saved else "vision_model.")

    plan, missing, bad_shape, used = {}, [], [], set()
    for key, (shape, _) in expected.items():
        try:
            rule, m = lookup(layout, key)
        except KeyError:
            missing.append(key)
            plan[key] = None
            continue
        groups = rule.parts(m, names)
        keys = [p.key for g in groups for p in g]
        absent = list(dict.fromkeys(k for k in keys if k not in folder))
        used.update(k for k in keys if k in folder)  # the other sources of a tensor missing one are not unexpected
        if absent and rule.optional:
            plan[key] = None  # zeros, as the reference initialises it
            continue
        if absent:
            missing.extend(absent)
            plan[key] = None  # zeros when not strict
            continue
        plan[key] = (rule, m)
        shapes = [[_part_shape(folder, p) for p in g] for g in groups]
        got = None if any(s is None for g in shapes for s in g) else rule.full_shape(shapes)
        if got is None or list(got) != list(shape):
            got_s = list(got) if got is not None else ", ".join(sorted({f"{k} {folder.shape(k)}" for k in keys}))
            bad_shape.append(f"{key}: expected {list(shape)}, got {got_s}")
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

    for key, (shape, _) in expected.items():
        if plan[key] is None:
            yield key, torch.zeros(shape, dtype=torch.float32)
            continue
        rule, m = plan[key]
        experts = expert_subset.get(pool_of(m)) if rule.per_expert and expert_subset is not None else None
        if experts is not None and not len(experts):
            yield key, torch.empty(0, *shape[1:])
            continue
        groups = rule.parts(m, names, experts)
        whole = _whole_tensor(groups)
        yield key, folder.get(whole) if whole else rule.build([[_read(folder, p) for p in g] for g in groups])


def _whole_tensor(groups: list[list[Part]]) -> str | None:
    """The key when `groups` are exactly the rows 0..n-1 of one stored tensor, in order: read it in one go."""
    first = groups[0][0]
    if first.row is None or any(len(g) != 1 for g in groups) or len(groups) != first.rows:
        return None
    ok = all(g[0].key == first.key and g[0].row == i for i, g in enumerate(groups))
    return first.key if ok else None


def _is_tied_head(key: str, cfg: ModelConfig) -> bool:
    return key == "lm_head.weight" and cfg.tie_word_embeddings


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
        if dtype is not None and t.is_floating_point() and not keep_float32(key):
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


def default_dtype(asked, device):
    """The dtype to load in when none is asked: bfloat16 on GPUs, else None (the checkpoint's own dtype)."""
    if asked:
        return asked
    return "bfloat16" if str(device or "cpu").startswith("cuda") else None


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
    `prepare(model)` may swap modules on the meta model before loading and `expert_subset` ({"text": [experts],
    "vision": [...]}) restricts which experts are read (both used by expert-parallel shards, see
    `expert_parallel.load_sharded_model`)."""
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
        target = torch.float32 if keep_float32(key) else (want or t.dtype)
        p = t.to(device=dev, dtype=target)
        if p.data_ptr() == t.data_ptr():
            # NOTE: still a view into the memory-mapped file: copy it into allocator memory. CPU kernels round
            # differently on data at odd alignments, so otherwise the same weights stored at other file offsets
            # (the other layout, another writer) would give other logits.
            p = p.clone()
        mod_name, _, pname = key.rpartition(".")
        setattr(modules[mod_name], pname, torch.nn.Parameter(p, requires_grad=False))
    if want is None:  # "auto": one dtype for the whole model, the checkpoint's embedding dtype
        model.to_dtype(want_auto)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    model.reset_buffers(dev)
    return model.eval()
