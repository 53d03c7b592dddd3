"""Model configuration: plain dataclasses, a name table, and adapters for both on-disk `config.json` formats.

Two formats exist on the hub and in the wild:

* the Hugging Face format (`model_type: "ernie4_5_vl_moe"`, nested `text_config` / `vision_config`), written by
  transformers >= 5 and by `ernie-vl make-tiny` / `ernie-vl convert`;
* the original Baidu format used with remote code (flat keys such as `moe_num_experts: [64, 64]`,
  `moe_layer_start_index`, `im_patch_id`, `vision_config.embed_dim`, ...).

`ModelConfig.from_dict` accepts either; `to_hf_dict` / `to_original_dict` write them back. Field meanings follow
transformers 5.23.0 `configuration_ernie4_5_vl_moe.py` (see docs/model-spec §2).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config.json that cannot describe an ERNIE-4.5-VL-MoE model."""


@dataclass
class VisionConfig:
    depth: int = 32
    hidden_size: int = 1280
    hidden_act: str = "quick_gelu"
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_merge_size: int = 2
    intermediate_size: int = 5120
    rms_norm_eps: float = 1e-6  # NOTE: used by LayerNorms despite the name (vision blocks + resampler MLPs)
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"vision hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 4:
            raise ConfigError(f"vision head_dim {self.head_dim} must be divisible by 4 (2-D axial rotary)")
        if self.temporal_merge_size != 2:
            raise ConfigError(f"temporal_merge_size must be 2 (the resampler hard-codes it), got {self.temporal_merge_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.patch_size * self.patch_size


@dataclass
class TextConfig:
    vocab_size: int = 103424
    hidden_size: int = 2560
    intermediate_size: int = 12288
    num_hidden_layers: int = 28
    num_attention_heads: int = 20
    num_key_value_heads: int = 4
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    use_bias: bool = False
    rope_theta: float = 500000.0
    mrope_section: list[int] = field(default_factory=lambda: [22, 22, 20])
    moe_intermediate_size: list[int] = field(default_factory=lambda: [1536, 512])
    moe_k: int = 6
    moe_num_experts: int = 64
    moe_num_shared_experts: int = 2
    moe_norm_min: float = 1e-12
    mlp_layer_types: list[str] | None = None
    tie_word_embeddings: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.mlp_layer_types is None:
            self.mlp_layer_types = ["dense"] + ["sparse"] * (self.num_hidden_layers - 1)
        if len(self.mlp_layer_types) != self.num_hidden_layers:
            raise ConfigError(
                f"mlp_layer_types has {len(self.mlp_layer_types)} entries for {self.num_hidden_layers} layers"
            )
        bad = sorted(set(self.mlp_layer_types) - {"dense", "sparse"})
        if bad:
            raise ConfigError(f"mlp_layer_types may hold 'dense' or 'sparse', got {bad}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if sum(self.mrope_section) * 2 != self.head_dim:
            raise ConfigError(f"mrope_section {self.mrope_section} must sum to head_dim/2 = {self.head_dim // 2}")
        if len(self.moe_intermediate_size) != 2:
            raise ConfigError(f"moe_intermediate_size must be [text, vision], got {self.moe_intermediate_size}")
        if not 0 < self.moe_k <= self.moe_num_experts:
            raise ConfigError(f"moe_k {self.moe_k} must be in 1..moe_num_experts ({self.moe_num_experts})")

    @property
    def sparse_layers(self) -> list[int]:
        return [i for i, kind in enumerate(self.mlp_layer_types) if kind == "sparse"]

    @property
    def shared_intermediate_size(self) -> int:
        return self.moe_intermediate_size[0] * self.moe_num_shared_experts


@dataclass
class ModelConfig:
    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    image_token_id: int = 100295
    image_start_token_id: int = 101304
    image_end_token_id: int = 101305
    video_token_id: int = 103367
    video_start_token_id: int = 101306
    video_end_token_id: int = 101307
    tie_word_embeddings: bool = True

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Read either config format (HF `ernie4_5_vl_moe` or the original Baidu one)."""
        model_type = d.get("model_type")
        if model_type in ("ernie4_5_vl_moe", "ernie4_5_vl"):
            return cls._from_hf(d)
        if "text_config" not in d and ("moe_num_experts" in d or "im_patch_id" in d):
            return cls._from_original(d)
        raise ConfigError(
            f"unknown model_type {model_type!r}: expected 'ernie4_5_vl_moe' (Hugging Face format) or an original "
            "ERNIE-4.5-VL config (flat keys such as moe_num_experts, im_patch_id)"
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    @classmethod
    def _from_hf(cls, d: dict[str, Any]) -> "ModelConfig":
        t = dict(d.get("text_config") or {})
        v = dict(d.get("vision_config") or {})
        rope = t.get("rope_parameters") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ConfigError(f"text rope_type must be 'default', got {rope.get('rope_type')!r}")
        fields = _pick(t, TextConfig, aliases={"num_experts": "moe_num_experts", "num_experts_per_tok": "moe_k"})
        fields["rope_theta"] = float(rope.get("rope_theta", t.get("rope_theta", 500000.0)))
        fields["mrope_section"] = list(rope.get("mrope_section", [22, 22, 20]))
        text = TextConfig(**fields)
        vrope = v.get("rope_parameters") or {}
        vision = VisionConfig(
            **_pick(v, VisionConfig, aliases={"num_hidden_layers": "depth", "num_attention_heads": "num_heads"})
        )
        vision.rope_theta = float(vrope.get("rope_theta", 10000.0))
        top = _pick(d, cls, skip={"text", "vision"})
        return cls(text=text, vision=vision, **top)

    @classmethod
    def _from_original(cls, d: dict[str, Any]) -> "ModelConfig":
        """The original Baidu config.json, mapped as transformers' converter does (model-spec §2.5)."""
        v = dict(d.get("vision_config") or {})
        vh = v.get("hidden_size", v.get("embed_dim", 1280))
        vision = VisionConfig(
            depth=v.get("depth", 32),
            hidden_size=vh,
            hidden_act=v.get("hidden_act", "quick_gelu"),
            num_heads=v.get("num_heads", 16),
            in_channels=v.get("in_channels", 3),
            patch_size=v.get("patch_size", 14),
            spatial_merge_size=d.get("spatial_conv_size", v.get("spatial_merge_size", 2)),
            temporal_merge_size=d.get("temporal_conv_size", 2),
            intermediate_size=int(vh * v.get("mlp_ratio", 4)),
            rms_norm_eps=1e-6,
        )
        n_layers = d["num_hidden_layers"]
        interval = d.get("moe_layer_interval", 1)
        starts = _as_list(d.get("moe_layer_start_index", 1))
        ends = _as_list(d.get("moe_layer_end_index", n_layers - 1))
        layer_types = [
            "sparse" if (i + 1) % interval == 0 and min(starts) <= i <= max(ends) else "dense" for i in range(n_layers)
        ]
        experts = _as_list(d.get("moe_num_experts", 64))
        if len(experts) == 2 and experts[0] != experts[1]:
            raise ConfigError(f"text and vision expert counts differ ({experts}); this layout is not supported")
        head_dim = d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"]
        t_pairs = d.get("freq_allocation", 20)
        hw_pairs = head_dim // 2 - t_pairs  # 28B: 64 - 20 = 44 -> [22, 22, 20], what transformers hard-codes
        text = TextConfig(
            mrope_section=[hw_pairs // 2, hw_pairs - hw_pairs // 2, t_pairs],
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=n_layers,
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads", d["num_attention_heads"]),
            head_dim=d.get("head_dim"),
            max_position_embeddings=d.get("max_position_embeddings", 131072),
            rms_norm_eps=d.get("rms_norm_eps", 1e-5),
            use_bias=d.get("use_bias", False),
            rope_theta=float(d.get("rope_theta", 500000.0)),
            moe_intermediate_size=_as_list(d.get("moe_intermediate_size", [1536, 512])),
            moe_k=d.get("moe_k", 6),
            moe_num_experts=experts[0],
            moe_num_shared_experts=d.get("moe_num_shared_experts") or 0,
            mlp_layer_types=layer_types,
            tie_word_embeddings=d.get("tie_word_embeddings", True),
        )
        return cls(
            text=text,
            vision=vision,
            image_token_id=d.get("im_patch_id", 100295),
            tie_word_embeddings=d.get("tie_word_embeddings", True),
        )

    # ------------------------------------------------------------------ writing
    def to_hf_dict(self) -> dict[str, Any]:
        t = dataclasses.asdict(self.text)
        rope = {"rope_type": "default", "rope_theta": t.pop("rope_theta"), "mrope_section": t.pop("mrope_section")}
        t["rope_parameters"] = rope
        t["model_type"] = "ernie4_5_vl_moe_text"
        v = dataclasses.asdict(self.vision)
        v["rope_parameters"] = {"rope_type": "axial", "rope_theta": v.pop("rope_theta")}
        v["model_type"] = "ernie4_5_vl_moe_vision"
        top = {k: getattr(self, k) for k in _TOKEN_FIELDS}
        return {
            "architectures": ["Ernie4_5_VLMoeForConditionalGeneration"],
            "model_type": "ernie4_5_vl_moe",
            **top,
            "tie_word_embeddings": self.tie_word_embeddings,
            "text_config": t,
            "vision_config": v,
        }

    def to_original_dict(self) -> dict[str, Any]:
        """The original (remote-code) format; the inverse of `_from_original` for the fields it carries."""
        t, v = self.text, self.vision
        sparse = t.sparse_layers
        if sparse and sparse != list(range(sparse[0], sparse[-1] + 1)):
            raise ConfigError(f"sparse layers {sparse} are not one contiguous range; the original format cannot say so")
        start, end = (sparse[0], sparse[-1]) if sparse else (t.num_hidden_layers, t.num_hidden_layers)
        return {
            "architectures": ["Ernie4_5_VLMoeForConditionalGeneration"],
            "model_type": "ernie4_5_moe_vl",
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "max_position_embeddings": t.max_position_embeddings,
            "moe_intermediate_size": list(t.moe_intermediate_size),
            "moe_k": t.moe_k,
            "moe_layer_interval": 1,
            "moe_layer_start_index": [start, start],
            "moe_layer_end_index": [end, end],
            "moe_num_experts": [t.moe_num_experts, t.moe_num_experts],
            "moe_num_shared_experts": t.moe_num_shared_experts,
            "num_attention_heads": t.num_attention_heads,
            "num_hidden_layers": t.num_hidden_layers,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": t.rope_theta,
            "vocab_size": t.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_bias": t.use_bias,
            "im_patch_id": self.image_token_id,
            "spatial_conv_size": v.spatial_merge_size,
            "temporal_conv_size": v.temporal_merge_size,
            "pixel_hidden_size": v.hidden_size,
            "freq_allocation": t.mrope_section[2],
            "vision_config": {
                "depth": v.depth,
                "hidden_size": v.hidden_size,
                "embed_dim": v.hidden_size,
                "hidden_act": v.hidden_act,
                "mlp_ratio": v.intermediate_size / v.hidden_size,
                "num_heads": v.num_heads,
                "in_channels": v.in_channels,
                "patch_size": v.patch_size,
                "spatial_merge_size": v.spatial_merge_size,
            },
        }

    def replace(self, **text_overrides: Any) -> "ModelConfig":
        """A copy with text-config fields changed (derived fields recomputed)."""
        t = dataclasses.replace(self.text, **text_overrides)
        return dataclasses.replace(self, text=t, vision=dataclasses.replace(self.vision))


_TOKEN_FIELDS = (
    "image_token_id",
    "image_start_token_id",
    "image_end_token_id",
    "video_token_id",
    "video_start_token_id",
    "video_end_token_id",
)


def _as_list(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _pick(d: dict[str, Any], cls: type, aliases: dict[str, str] | None = None, skip: set[str] = frozenset()) -> dict:
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    out = {}
    for k, val in d.items():
        k = (aliases or {}).get(k, k)
        if k in names and k not in out:
            out[k] = val
    return out


# ---------------------------------------------------------------------------------------------- name table
def _tiny(**text_overrides: Any) -> ModelConfig:
    text = dict(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        mrope_section=[3, 3, 2],
        moe_intermediate_size=[32, 16],
        moe_k=2,
        moe_num_experts=8,
        moe_num_shared_experts=1,
        max_position_embeddings=32768,  # room for real benchmark media (a 32-frame 640x360 clip is ~5k tokens)
    )
    text.update(text_overrides)
    vision = VisionConfig(depth=2, hidden_size=32, num_heads=2, intermediate_size=64)
    return ModelConfig(text=TextConfig(**text), vision=vision)


def _demo() -> ModelConfig:
    """The embedded demo checkpoint's shape (`ernie_vl.demo_model`): the tiny structure, trained."""
    return _tiny()


def _small() -> ModelConfig:
    """A CPU benchmark shape: same structure as 28B, about 1/16 of the widths."""
    text = TextConfig(
        vocab_size=8192,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=2,
        moe_intermediate_size=[256, 128],
        moe_k=6,
        moe_num_experts=64,
        moe_num_shared_experts=2,
        mrope_section=[11, 11, 10],
    )
    vision = VisionConfig(depth=4, hidden_size=256, num_heads=4, intermediate_size=1024)
    return ModelConfig(text=text, vision=vision)


NAMED_CONFIGS = {
    "tiny": _tiny,
    "demo": _demo,
    "small": _small,
    "28b-a3b": ModelConfig,  # baidu/ERNIE-4.5-VL-28B-A3B-PT (defaults = transformers' defaults)
}


def named_config(name: str) -> ModelConfig:
    try:
        return NAMED_CONFIGS[name]()
    except KeyError:
        raise ConfigError(f"unknown config name {name!r}; known: {sorted(NAMED_CONFIGS)}") from None
