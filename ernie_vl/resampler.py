"""The variable-resolution resampler: 2x2 spatial merge, frame-pair temporal merge, projection to the LM width.

Mirrors transformers 5.23.0 `Ernie4_5_VLMoeVariableResolutionResamplerModel` (model-spec §7). Images use their single
frame twice; videos pair frames (0,1), (2,3), ... Output: h*w/4 tokens per image, t*h*w/8 per video.

Legend: N patch rows, M merged tokens, Dv vision width, Ds = Dv*4, D LM width.
"""

from __future__ import annotations

import torch
from torch import nn

from .text import RMSNorm


class MergeMLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, eps: float):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)
        self.ln = nn.LayerNorm(out_dim, eps=eps)

    def forward(self, x):
        return self.ln(self.fc2(self.act(self.fc1(x))))


class Resampler(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        v, t = cfg.vision, cfg.text
        self.merge = v.spatial_merge_size
        spatial_dim = v.hidden_size * self.merge**2
        self.spatial_linear = MergeMLP(spatial_dim, spatial_dim, v.rms_norm_eps)
        self.temporal_linear = MergeMLP(spatial_dim * v.temporal_merge_size, spatial_dim, v.rms_norm_eps)
        self.mlp = nn.Linear(spatial_dim, t.hidden_size)
        self.after_norm = RMSNorm(t.hidden_size, t.rms_norm_eps)

    def forward(self, x_NDv: torch.Tensor, first_M: torch.Tensor, second_M: torch.Tensor) -> torch.Tensor:
        """`first_M` / `second_M`: the merged rows of each output token's two frames (`inputs.VisionBatch`)."""
        x_MDs = self.spatial_linear(x_NDv.reshape(-1, x_NDv.shape[-1] * self.merge**2))
        x = self.temporal_linear(torch.cat([x_MDs[first_M], x_MDs[second_M]], dim=-1))
        return self.after_norm(self.mlp(x))
