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
        budget = CPU_CHUNK_ROWS if pixel_rows_NP.device.type == "cpu" else None
        chunks = list(frame_chunks(segments, budget))
        if len(chunks) == 1:
            return self._frames(pixel_rows_NP, patch_pos_N2, segments)
        out = torch.empty(pixel_rows_NP.shape[0], self.cfg.hidden_size, dtype=self.ln.weight.dtype,
                          device=pixel_rows_NP.device)
        for lo, hi, segs in chunks:
            out[lo:hi] = self._frames(pixel_rows_NP[lo:hi], patch_pos_N2[lo:hi], segs)
        return out

    def _frames(self, pixel_rows_NP, patch_pos_N2, segments):
        cos, sin = vision_cos_sin(patch_pos_N2, self.inv_freq)
        x = self.patch_embed(pixel_rows_NP)
        for block in self.blocks:
            x = block(x, cos, sin, segments)
        return self.ln(x)


#: On CPU the tower runs over groups of whole frames of about this many patch rows: every frame attends only to
#: itself and every other op is per row, so the result is the same (bit-identical here), while the block's
#: intermediates (4x the width for the MLP) stay small enough to be reused by the allocator and the caches instead of
#: being freshly mapped, zeroed and faulted in for every op: 1.2-1.3x faster on a 16-frame 448x252 video on 2 cores.
#: GPUs keep one launch per op over everything.
CPU_CHUNK_ROWS = 2048


def frame_chunks(segments: list[tuple[int, int, int]], budget: int | None):
    """(row start, row end, segments relative to the start) of consecutive groups of whole frames holding at most
    `budget` rows each (a frame larger than the budget is a group of its own); one group without a budget."""
    if budget is None or not segments:
        end = max((off + t * hw for off, t, hw in segments), default=0)
        yield 0, end, segments
        return
    lo, rows, group = None, 0, []
    for off, t, hw in segments:
        for f in range(t):
            if group and rows + hw > budget:
                yield lo, lo + rows, _merge(group, lo)
                lo, rows, group = None, 0, []
            lo = off + f * hw if lo is None else lo
            rows += hw
            group.append((off + f * hw, hw))
    if group:
        yield lo, lo + rows, _merge(group, lo)


def _merge(frames: list[tuple[int, int]], base: int) -> list[tuple[int, int, int]]:
    """Frames (row offset, rows) -> (offset relative to `base`, frames, rows per frame) runs of equal-sized frames."""
    out: list[list[int]] = []
    for off, hw in frames:
        if out and out[-1][2] == hw and out[-1][0] + out[-1][1] * hw == off - base:
            out[-1][1] += 1
        else:
            out.append([off - base, 1, hw])
    return [tuple(x) for x in out]
