"""Rotary position embeddings: the text decoder's interleaved 3-D M-RoPE and the ViT's 2-D axial RoPE.

Mirrors transformers 5.23.0 `Ernie4_5_VLMoeTextRotaryEmbedding` / `Ernie4_5_VLMoeVisionRotaryEmbedding`
(model-spec §4.4, §6.3). cos/sin are always float32; rotation happens in float32 and casts back.

Legend: B batch, S sequence, N vision patches, H heads, Dh head dim, P = Dh/2 rotation pairs.
"""

from __future__ import annotations

import torch


def text_inv_freq(head_dim: int, theta: float, mrope_section: list[int]) -> torch.Tensor:
    """[P] inverse frequencies, pre-permuted so the first h+w pairs alternate height/width (model-spec §4.4)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    hw, t = mrope_section[0] + mrope_section[1], mrope_section[2]
    out = torch.empty_like(inv)
    out[:hw] = torch.cat([inv[:hw][0::2], inv[:hw][1::2]])
    out[hw:] = inv[hw:]
    assert out.numel() == hw + t
    return out


def text_cos_sin(position_ids_3BS: torch.Tensor, inv_freq_P: torch.Tensor, mrope_section: list[int]):
    """cos, sin [B, S, Dh] float32 from positions [3, B, S] (rows: temporal, height, width)."""
    freqs_3BSP = position_ids_3BS[..., None].float() * inv_freq_P.to(position_ids_3BS.device)
    # chunk 0 (height pairs) reads row 1, chunk 1 (width) row 2, chunk 2 (temporal) row 0.
    h, w, t = (chunk[(i + 1) % 3] for i, chunk in enumerate(freqs_3BSP.split(list(mrope_section), dim=-1)))
    freqs_BSP = torch.cat([torch.stack([h, w], dim=-1).flatten(-2), t], dim=-1)
    freqs_BSD = freqs_BSP[..., None].expand(*freqs_BSP.shape, 2).flatten(-2)  # each pair's angle twice
    return freqs_BSD.cos(), freqs_BSD.sin()


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): GPT-J style interleaved rotation."""
    x = x.unflatten(-1, (-1, 2))
    return torch.stack((-x[..., 1], x[..., 0]), dim=-1).flatten(-2)


def apply_text_rope(x_BHSD: torch.Tensor, cos_BSD: torch.Tensor, sin_BSD: torch.Tensor) -> torch.Tensor:
    cos, sin = cos_BSD[:, None], sin_BSD[:, None]
    xf = x_BHSD.float()
    return (xf * cos + _rotate_pairs(xf) * sin).to(x_BHSD.dtype)


def vision_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    dim = head_dim // 2
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


def vision_cos_sin(pos_N2: torch.Tensor, inv_freq: torch.Tensor):
    """cos, sin [N, Dh] float32 from patch (row, col) positions [N, 2]."""
    freqs = pos_N2[..., None].float() * inv_freq.to(pos_N2.device)  # [N, 2, Dh/4]
    emb = torch.cat([freqs[:, 0], freqs[:, 1]], dim=-1)
    emb = torch.cat([emb, emb], dim=-1)
    return emb.cos(), emb.sin()


def apply_vision_rope(x_NHD: torch.Tensor, cos_ND: torch.Tensor, sin_ND: torch.Tensor) -> torch.Tensor:
    """NeoX (split-half) rotation."""
    xf = x_NHD.float()
    half = xf.shape[-1] // 2
    rot = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos_ND[:, None] + rot * sin_ND[:, None]).to(x_NHD.dtype)
