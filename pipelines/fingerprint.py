"""Run fingerprints: what must be equal for two runs' predictions to be interchangeable.

fingerprint(benchmark) = sha256 over
  * checkpoint identity — config.json, generation_config.json, tokenizer / processor / chat-template files, and per
    weight shard its name, size, safetensors header and a 1 MiB sample of its tail (a fine-tune with the same shapes
    differs there; hashing 58 GB of weights on every start would not be acceptable);
  * the prompt: benchmark name and prompt/metric version, flavor, video sampling policy of that flavor (short videos
    included), reasoning (`thinking`, only when on: runs without it keep their earlier fingerprints), evals version;
  * generation settings (max_new_tokens, sampling, seed) and dtype;
  * versions of the packages that change outputs (ernie_vl, torch, numpy, pillow, av).
Sizes (replicas, batch size) and packages that move data without changing it (ray, pyarrow) are recorded in the
manifest but not fingerprinted.
"""

from __future__ import annotations

import hashlib
import json
import struct
from importlib import metadata
from pathlib import Path

PROMPT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)
FINGERPRINT_PACKAGES = ("ernie-vl", "torch", "numpy", "pillow", "av")
#: the parts of a benchmark's fingerprint that change what the model is asked (the samples' prompts and media):
#: two runs that differ there did not answer the same inputs and are not compared (`ernie-vl compare`); the other
#: parts (checkpoint, generation, dtype, thinking, packages) are what a comparison is about
INPUT_PARTS = ("benchmark", "benchmark_version", "flavor", "video_sampling")
RECORDED_PACKAGES = FINGERPRINT_PACKAGES + ("ray", "pyarrow", "pandas", "transformers", "tokenizers")
_TAIL = 1 << 20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _weight_identity(path: Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        header = b""
        if path.suffix == ".safetensors" and len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            header = fh.read(min(n, 64 << 20))
        fh.seek(max(0, size - _TAIL))
        tail = fh.read(_TAIL)
    return {"size": size, "header": _sha(head + header), "tail": _sha(tail)}


def checkpoint_identity(path: str | Path) -> dict:
    """A dict of hashes that identifies a checkpoint folder's content (see the module docstring)."""
    path = Path(path)
    files = {}
    for name in PROMPT_FILES:
        p = path / name
        if p.is_file():
            files[name] = _sha(p.read_bytes())
    weights = {}
    for p in sorted(path.iterdir()):
        if p.suffix in (".safetensors", ".bin", ".pt"):
            weights[p.name] = _weight_identity(p)
    if not weights:
        raise FileNotFoundError(f"no weight files (*.safetensors) in checkpoint folder {path}")
    ident = {"files": files, "weights": weights}
    return {"name": path.name, "sha256": _sha(json.dumps(ident, sort_keys=True).encode())}


def package_versions(names=RECORDED_PACKAGES) -> dict:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def benchmark_fingerprint_parts(common: dict, benchmark_name: str, benchmark, thinking: dict | None = None,
                                split: str | None = None) -> dict:
    """The fingerprinted facts of one benchmark of a run (`common` from `common_parts`; `thinking` from
    `EvalConfig.thinking_record`; `split` when it is not the benchmark's default: other samples, other metrics)."""
    version = getattr(benchmark, "version", None)
    parts = {
        **common,
        "benchmark": benchmark_name,
        "benchmark_version": None if version is None else str(version),
        "video_sampling": benchmark.video_policy(common["flavor"]),
    }
    if thinking is not None:
        parts["thinking"] = thinking
    if split is not None and split != getattr(benchmark, "default_split", None):
        parts["split"] = split
    return parts


def common_parts(cfg, model_path: Path, dtype: str) -> dict:
    """Fingerprinted facts shared by every benchmark of a run."""
    versions = package_versions(FINGERPRINT_PACKAGES)
    if versions.get("ernie-vl") is None:  # a source checkout that is not pip-installed
        import ernie_vl

        versions["ernie-vl"] = getattr(ernie_vl, "__version__", None)
    try:
        import evals

        versions["evals"] = getattr(evals, "__version__", None)
    except ImportError:  # pragma: no cover - evals is part of this repository
        versions["evals"] = None
    return {
        "checkpoint": checkpoint_identity(model_path),
        "flavor": cfg.flavor,
        "generation": cfg.generation_record(),
        "dtype": dtype,
        "packages": versions,
    }


def fingerprint_of(parts: dict) -> str:
    """A 32-hex-digit digest of fingerprint parts (JSON with sorted keys)."""
    return _sha(json.dumps(parts, sort_keys=True, default=str).encode())[:32]


def input_differences(a: dict, b: dict) -> list[str]:
    """The :data:`INPUT_PARTS` that differ between two benchmarks' fingerprint parts, as :func:`diff_parts` words."""
    return diff_parts({k: a.get(k) for k in INPUT_PARTS}, {k: b.get(k) for k in INPUT_PARTS})


def diff_parts(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable list of the fields that differ between two fingerprint part dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_parts(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out
