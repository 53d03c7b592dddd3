"""Rotary embeddings (`ernie_vl.rope`) against transformers 5.23.0's rotary classes and apply functions.

Text: the interleaved 3-D M-RoPE (`Ernie4_5_VLMoeTextRotaryEmbedding`, `apply_rotary_pos_emb`); vision: the 2-D
axial RoPE (`Ernie4_5_VLMoeVisionRotaryEmbedding`, `apply_rotary_pos_emb_vision`). Positions are random and differ
per axis, so a mix-up of the temporal/height/width rows or of the h/w pair order shows.
"""

from __future__ import annotations

import pytest
import torch

import transformers  # noqa: F401 - part of the test extra: a missing one must fail, not skip
from transformers import Ernie4_5_VLMoeConfig
from transformers.models.ernie4_5_vl_moe import modeling_ernie4_5_vl_moe as hf

from ernie_vl.config import named_config
from ernie_vl.rope import (
    apply_text_rope,
    apply_vision_rope,
    text_cos_sin,
    text_inv_freq,
    vision_cos_sin,
    vision_inv_freq,
)


def _configs(name: str):
    ours = named_config(name)
    return ours, Ernie4_5_VLMoeConfig(**ours.to_hf_dict())


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_text_mrope_cos_sin_match_transformers(name):
    cfg, hf_cfg = _configs(name)
    t = cfg.text
    ref = hf.Ernie4_5_VLMoeTextRotaryEmbedding(hf_cfg.text_config)
    inv = text_inv_freq(t.head_dim, t.rope_theta, t.mrope_section)
    assert inv.shape == (t.head_dim // 2,)
    torch.testing.assert_close(inv, ref.inv_freq, rtol=0, atol=0)

    g = torch.Generator().manual_seed(0)
    pos_3BS = torch.randint(0, 3000, (3, 2, 11), generator=g)  # temporal, height, width rows all different
    cos, sin = text_cos_sin(pos_3BS, inv, t.mrope_section)
    ref_cos, ref_sin = ref(torch.zeros(1, dtype=torch.bfloat16), pos_3BS)
    assert cos.dtype == sin.dtype == torch.float32 and cos.shape == (2, 11, t.head_dim)
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=0)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=0)
    # every axis matters: moving only the width row changes the angles
    moved = pos_3BS.clone()
    moved[2] += 1
    assert not torch.equal(text_cos_sin(moved, inv, t.mrope_section)[0], cos)


def test_text_positions_equal_on_all_axes_give_plain_rope_angles():
    """A text token has t = h = w = p: the h/w interleave undoes the frequencies' pre-permutation, so its angles are
    the standard RoPE ones, p / theta^(2i/d) for pair i, each repeated for the two dims of its pair."""
    t = named_config("tiny").text
    inv = text_inv_freq(t.head_dim, t.rope_theta, t.mrope_section)
    p = torch.arange(7)
    cos, sin = text_cos_sin(p[None, None].expand(3, 1, -1), inv, t.mrope_section)
    standard = 1.0 / (t.rope_theta ** (torch.arange(0, t.head_dim, 2, dtype=torch.float) / t.head_dim))
    angles = (p[:, None].float() * standard[None]).repeat_interleave(2, dim=-1)
    torch.testing.assert_close(cos[0], angles.cos(), rtol=0, atol=0)
    torch.testing.assert_close(sin[0], angles.sin(), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_text_rope_matches_transformers(dtype):
    cfg, hf_cfg = _configs("tiny")
    t = cfg.text
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, t.num_attention_heads, 9, t.head_dim, generator=g).to(dtype)
    k = torch.randn(2, t.num_key_value_heads, 9, t.head_dim, generator=g).to(dtype)
    pos = torch.randint(0, 100, (3, 2, 9), generator=g)
    cos, sin = text_cos_sin(pos, text_inv_freq(t.head_dim, t.rope_theta, t.mrope_section), t.mrope_section)
    ref_q, ref_k = hf.apply_rotary_pos_emb(q, k, cos, sin)
    for ours, ref in ((apply_text_rope(q, cos, sin), ref_q), (apply_text_rope(k, cos, sin), ref_k)):
        assert ours.dtype == dtype
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_vision_rope_cos_sin_match_transformers():
    cfg, hf_cfg = _configs("tiny")
    v = cfg.vision
    ref = hf.Ernie4_5_VLMoeVisionRotaryEmbedding(hf_cfg.vision_config)
    inv = vision_inv_freq(v.head_dim, v.rope_theta)
    torch.testing.assert_close(inv, ref.inv_freq, rtol=0, atol=0)
    g = torch.Generator().manual_seed(2)
    pos_N2 = torch.randint(0, 64, (37, 2), generator=g)  # (row, col) per patch
    cos, sin = vision_cos_sin(pos_N2, inv)
    ref_cos, ref_sin = ref(torch.zeros(1), pos_N2)
    assert cos.shape == (37, v.head_dim)
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=0)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=0)
    swapped = vision_cos_sin(pos_N2.flip(-1), inv)[0]  # rows and columns are not interchangeable
    assert not torch.equal(swapped, cos)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_vision_rope_matches_transformers(dtype):
    cfg, _ = _configs("tiny")
    v = cfg.vision
    g = torch.Generator().manual_seed(3)
    q = torch.randn(21, v.num_heads, v.head_dim, generator=g).to(dtype)
    k = torch.randn(21, v.num_heads, v.head_dim, generator=g).to(dtype)
    cos, sin = vision_cos_sin(torch.randint(0, 16, (21, 2), generator=g), vision_inv_freq(v.head_dim, v.rope_theta))
    ref_q, ref_k = hf.apply_rotary_pos_emb_vision(q, k, cos, sin)
    for ours, ref in ((apply_vision_rope(q, cos, sin), ref_q), (apply_vision_rope(k, cos, sin), ref_k)):
        assert ours.dtype == dtype
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
