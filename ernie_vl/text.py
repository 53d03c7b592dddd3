"""The text decoder: pre-norm GQA attention + (dense SwiGLU | modality-isolated MoE) layers, final RMSNorm.

Mirrors transformers 5.23.0 `Ernie4_5_VLMoeTextModel` / `Ernie4_5_VLMoeDecoderLayer` (model-spec §4).
Legend: B batch, S new tokens, L cached + new tokens, D hidden.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import TextAttention
from .moe import MLP, MoEBlock


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)  # NOTE: weight applied after the cast back, Llama style


class DecoderLayer(nn.Module):
    def __init__(self, cfg, idx: int):
        super().__init__()
        self.self_attn = TextAttention(cfg, idx)
        self.is_moe = cfg.mlp_layer_types[idx] == "sparse"
        self.mlp = MoEBlock(cfg) if self.is_moe else MLP(cfg.hidden_size, cfg.intermediate_size, cfg.use_bias)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, start, route):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, start)
        h = self.post_attention_layernorm(x)
        return x + (self.mlp(h, route) if self.is_moe else self.mlp(h))


class TextModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, h_BSD, cos, sin, mask, cache, start: int, route):
        for layer in self.layers:
            h_BSD = layer(h_BSD, cos, sin, mask, cache, start, route)
        return self.norm(h_BSD)
