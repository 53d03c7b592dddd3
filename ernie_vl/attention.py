"""Attention: the text decoder's GQA attention over a KV cache and the ViT's per-frame (varlen) attention.

One place picks the kernel (SDPA); the masks are built once per forward by the caller (model-spec §4.3-4.5, §6.4).

Legend: B batch, S new tokens, L cached + new tokens, H query heads, G kv heads, Dh head dim, N vision patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import KVCache
from .rope import apply_text_rope, apply_vision_rope


def causal_padding_mask(attention_mask_BL: torch.Tensor, start: int, S: int) -> torch.Tensor:
    """Boolean [B, 1, S, L] mask: query i (absolute position start+i) sees keys j <= start+i that are not padding.

    NOTE: a padding query would see no key at all (left padding) and SDPA would return NaN, which then leaks into the
    padding rows' values; letting every query see itself keeps all rows finite without changing real rows.
    """
    L = attention_mask_BL.shape[1]
    q_pos = torch.arange(start, start + S, device=attention_mask_BL.device)
    k_pos = torch.arange(L, device=attention_mask_BL.device)
    causal_SL = k_pos[None, :] <= q_pos[:, None]
    mask = causal_SL[None] & attention_mask_BL.bool()[:, None, :]
    mask |= k_pos[None, None, :] == q_pos[None, :, None]
    return mask[:, None]


class TextAttention(nn.Module):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        D, Dh = cfg.hidden_size, cfg.head_dim
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, Dh
        self.q_proj = nn.Linear(D, self.n_heads * Dh, bias=cfg.use_bias)
        self.k_proj = nn.Linear(D, self.n_kv * Dh, bias=cfg.use_bias)
        self.v_proj = nn.Linear(D, self.n_kv * Dh, bias=cfg.use_bias)
        self.o_proj = nn.Linear(self.n_heads * Dh, D, bias=cfg.use_bias)

    def forward(self, x_BSD, cos_BSD, sin_BSD, mask_B1SL, cache: KVCache | None, start: int):
        B, S, _ = x_BSD.shape
        q = self.q_proj(x_BSD).view(B, S, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x_BSD).view(B, S, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x_BSD).view(B, S, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_text_rope(q, cos_BSD, sin_BSD), apply_text_rope(k, cos_BSD, sin_BSD)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, start)
        # no mask: an unpadded prompt from position 0 (`model.prefill`), causal
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_B1SL, is_causal=mask_B1SL is None,
                                             enable_gqa=self.n_kv != self.n_heads)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, -1))


class VisionAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x_ND, cos_ND, sin_ND, segments: list[tuple[int, int, int]]):
        """`segments`: (offset, frames, patches_per_frame) per image/video; each frame attends only to itself."""
        N, D = x_ND.shape
        q, k, v = self.qkv(x_ND).view(N, 3, self.num_heads, -1).unbind(1)
        q, k = apply_vision_rope(q, cos_ND, sin_ND), apply_vision_rope(k, cos_ND, sin_ND)
        out = torch.empty_like(q)
        for off, t, hw in segments:
            # frames of one item share a length: batch them as [t, H, hw, Dh] in one SDPA call
            sl = slice(off, off + t * hw)
            qs, ks, vs = (z[sl].view(t, hw, self.num_heads, -1).transpose(1, 2) for z in (q, k, v))
            o = F.scaled_dot_product_attention(qs, ks, vs)
            out[sl] = o.transpose(1, 2).reshape(t * hw, self.num_heads, -1)
        return self.proj(out.reshape(N, D))
