"""The vision tower: a ViT over 14x14 patch rows with 2-D axial rotary and per-frame attention.

Mirrors transformers 5.23.0 `Ernie4_5_VLMoeVisionTransformerPretrainedModel` (model-spec §6). Input rows come from
the processor ([N, C*14*14], 2x2-block order); no merging happens here (the resampler does it).

Legend: N patch rows, D vision width, Dh head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import VisionAttention
from .rope import vision_cos_sin, vision_inv_freq


def _act(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "silu":
        return F.silu
    if name in ("gelu", "gelu_pytorch_tanh"):
        return (lambda x: F.gelu(x)) if name == "gelu" else (lambda x: F.gelu(x, approximate="tanh"))
    raise ValueError(f"unsupported vision activation {name!r}")


class VisionMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = _act(act)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.attn = VisionAttention(cfg.hidden_size, cfg.num_heads)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, x, cos, sin, segments):
        x = x + self.attn(self.norm1(x), cos, sin, segments)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(patch_dim, dim, bias=False)

    def forward(self, x):
        return self.proj(x.to(self.proj.weight.dtype))


class VisionTower(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch_dim, cfg.hidden_size)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.register_buffer("inv_freq", vision_inv_freq(cfg.head_dim, cfg.rope_theta), persistent=False)

    def forward(self, pixel_rows_NP: torch.Tensor, patch_pos_N2: torch.Tensor,
                segments: list[tuple[int, int, int]]) -> torch.Tensor:
        """[N, C*p*p] patch rows, their (row, col) patch positions [N, 2] and per-item (offset, frames, patches per
        frame) segments (`inputs.VisionBatch` makes and checks them) -> [N, D]."""
        if pixel_rows_NP.shape[-1] != self.cfg.patch_dim:
            raise ValueError(f"pixel rows {tuple(pixel_rows_NP.shape)}: expected {self.cfg.patch_dim} values per row")
        cos, sin = vision_cos_sin(patch_pos_N2, self.inv_freq)
        x = self.patch_embed(pixel_rows_NP)
        for block in self.blocks:
            x = block(x, cos, sin, segments)
        return self.ln(x)
