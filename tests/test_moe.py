"""The modality-isolated MoE (`ernie_vl.moe`) against transformers 5.23.0's `Ernie4_5_VLMoeMoeBlock` with the same
random weights (fp32, CPU): the router (the correction bias picks experts but does not weight them), both experts
implementations, the split of tokens between the text and vision pools, and the grouped experts against the loop.

Legend: T tokens, D hidden, E experts per pool, K top-k, F expert FFN width.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import transformers  # noqa: F401 - part of the test extra: a missing one must fail, not skip
from transformers import Ernie4_5_VLMoeConfig
from transformers.models.ernie4_5_vl_moe import modeling_ernie4_5_vl_moe as hf

from ernie_vl import moe
from ernie_vl.config import named_config

B, S = 2, 9


def _pair(shared: bool = True, seed: int = 0):
    """transformers' MoE block with random weights (a non-zero correction bias) and ours loaded from it, strictly."""
    cfg = named_config("tiny") if shared else named_config("tiny").replace(moe_num_shared_experts=0)
    ref = hf.Ernie4_5_VLMoeMoeBlock(Ernie4_5_VLMoeConfig(**cfg.to_hf_dict()).text_config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("e_score_correction_bias"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    ours = moe.MoEBlock(cfg.text)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return cfg.text, ours.eval(), ref.eval()


def _forward(block, x_BSD, vision_BS):
    """Our block on a token-type mask, whichever form its routing argument takes: a boolean mask `vision_BS`, or
    `route` = (text, vision) flat token indices; None = every token is text."""
    params = list(inspect.signature(block.forward).parameters)
    if vision_BS is None or params[1] == "vision_BS":
        return block(x_BSD, vision_BS)
    vis_T = vision_BS.reshape(-1)
    return block(x_BSD, ((~vis_T).nonzero().squeeze(1), vis_T.nonzero().squeeze(1)))


@pytest.fixture(autouse=True)
def _restore_experts_impl():
    yield
    moe.set_experts_impl("grouped")


# ------------------------------------------------------------------------------------------------ router
def test_router_matches_transformers():
    _, ours, ref = _pair(seed=1)
    x = torch.randn(40, ours.text_moe.gate.weight.shape[1], generator=torch.Generator().manual_seed(2))
    for pool in ("text_moe", "vision_moe"):
        w, idx = getattr(ours, pool).gate(x)
        _, ref_w, ref_idx = getattr(ref, pool).gate(x)
        assert torch.equal(idx, ref_idx), pool
        torch.testing.assert_close(w, ref_w, rtol=0, atol=0)


def test_correction_bias_picks_experts_but_does_not_weight_them():
    """Zero router weights give every expert probability 1/E; a bias on experts 3 and 5 makes them the top 2, and
    their weights stay the renormalised probabilities (1/2 each), not probability + bias."""
    cfg, ours, ref = _pair()
    E, K = cfg.moe_num_experts, cfg.moe_k
    assert K == 2
    bias = torch.zeros(1, E)
    bias[0, 3], bias[0, 5] = 0.3, 0.2
    for gate in (ours.text_moe.gate, ref.text_moe.gate):
        with torch.no_grad():
            gate.weight.zero_()
            gate.moe_statics.e_score_correction_bias.copy_(bias)
    x = torch.randn(4, cfg.hidden_size)
    w, idx = ours.text_moe.gate(x)
    assert idx.tolist() == [[3, 5]] * 4
    torch.testing.assert_close(w, torch.full((4, 2), 0.5), rtol=0, atol=0)
    _, ref_w, ref_idx = ref.text_moe.gate(x)
    assert torch.equal(idx, ref_idx) and torch.equal(w, ref_w)


def test_router_weights_are_the_unbiased_probabilities_of_the_picked_experts():
    cfg, ours, _ = _pair(seed=3)
    gate = ours.text_moe.gate
    with torch.no_grad():
        gate.moe_statics.e_score_correction_bias.copy_(torch.rand(1, cfg.moe_num_experts) * 0.5)  # changes picks
    x = torch.randn(64, cfg.hidden_size, generator=torch.Generator().manual_seed(4))
    w, idx = gate(x)
    probs = (x @ gate.weight.T).softmax(-1)
    unbiased_idx = probs.topk(cfg.moe_k, dim=-1).indices
    assert not torch.equal(idx.sort(-1).values, unbiased_idx.sort(-1).values)  # the bias did change some picks
    picked = probs.gather(-1, idx)
    torch.testing.assert_close(w, picked / picked.sum(-1, keepdim=True))


# ------------------------------------------------------------------------------------------------ block
def _types(kind: str, g) -> torch.Tensor | None:
    """transformers' moe_mm_token_type_ids [B, S]: 0 text, 1 image, 2 video (None: text only)."""
    if kind == "text":
        return None
    if kind == "vision":
        return torch.ones(B, S, dtype=torch.long)
    return torch.randint(0, 3, (B, S), generator=g)


@pytest.mark.parametrize("impl", ["grouped", "reference"])
@pytest.mark.parametrize("kind", ["text", "mixed", "vision"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "no-shared"])
def test_block_matches_transformers(impl, kind, shared):
    cfg, ours, ref = _pair(shared=shared, seed=5)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(B, S, cfg.hidden_size, generator=g)
    types = _types(kind, g)
    moe.set_experts_impl(impl)
    with torch.no_grad():
        out = _forward(ours, x, None if types is None else types != 0)
        ref_out, _ = ref(x, types)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)


def test_each_token_goes_to_its_own_pool_only():
    """Independently of the block: a token's output is its pool's experts on it plus the shared experts, and turning
    one token from text to vision changes that token's output alone."""
    cfg, ours, _ = _pair(seed=7)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(B, S, cfg.hidden_size, generator=g)
    vision = torch.rand(B, S, generator=g) < 0.5
    vision[0, 0], vision[0, 1] = True, False
    with torch.no_grad():
        out = _forward(ours, x, vision)
        x_TD, vis_T = x.reshape(-1, cfg.hidden_size), vision.reshape(-1)
        expected = ours.shared_experts(x_TD).clone()
        expected[vis_T] += ours.vision_moe(x_TD[vis_T])
        expected[~vis_T] += ours.text_moe(x_TD[~vis_T])
        torch.testing.assert_close(out.reshape(-1, cfg.hidden_size), expected, rtol=1e-6, atol=1e-6)
        flipped = vision.clone()
        flipped[0, 1] = True
        out2 = _forward(ours, x, flipped)
    change = (out2 - out).abs().amax(-1)
    assert change[0, 1] > 1e-2  # a different pool's experts
    change[0, 1] = 0
    assert change.max() < 1e-6  # the others: at most rounding (their pool's batch changed by one token)


def test_no_mask_means_every_token_is_text():
    cfg, ours, _ = _pair(seed=9)
    x = torch.randn(B, S, cfg.hidden_size, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        torch.testing.assert_close(_forward(ours, x, None), _forward(ours, x, torch.zeros(B, S, dtype=torch.bool)),
                                   rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ experts
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grouped_experts_equal_reference_loop(dtype):
    """float32 goes through F.grouped_mm, float64 through the per-expert slices; both equal the transformers loop."""
    g = torch.Generator().manual_seed(0)
    T, D, E, Fw, K = 37, 64, 8, 32, 3
    x = torch.randn(T, D, generator=g, dtype=dtype)
    gate_up, down = torch.randn(E, 2 * Fw, D, generator=g, dtype=dtype), torch.randn(E, D, Fw, generator=g, dtype=dtype)
    w, idx = torch.randn(T, E, generator=g, dtype=dtype).softmax(-1).topk(K, dim=-1)
    idx[0] = torch.tensor([5, 6, 7])  # expert 0..4 may be empty: empty groups must work
    ref = moe.experts_reference(x, idx, w, gate_up, down)
    torch.testing.assert_close(moe.experts_grouped(x, idx, w, gate_up, down), ref, rtol=1e-6, atol=1e-5)


def test_reference_loop_is_the_weighted_sum_of_the_chosen_experts():
    """The oracle itself, against the formula: out[t] = sum_k w[t,k] * down[e] @ (silu(gate[e] @ x) * (up[e] @ x))."""
    g = torch.Generator().manual_seed(1)
    T, D, E, Fw, K = 5, 8, 4, 6, 2
    x, gate_up, down = torch.randn(T, D, generator=g), torch.randn(E, 2 * Fw, D, generator=g), torch.randn(E, D, Fw, generator=g)
    w, idx = torch.rand(T, E, generator=g).topk(K, dim=-1)
    expected = torch.zeros(T, D)
    for t in range(T):
        for k in range(K):
            e = int(idx[t, k])
            h = torch.nn.functional.silu(gate_up[e, :Fw] @ x[t]) * (gate_up[e, Fw:] @ x[t])
            expected[t] += w[t, k] * (down[e] @ h)
    torch.testing.assert_close(moe.experts_reference(x, idx, w, gate_up, down), expected, rtol=1e-5, atol=1e-5)


def test_unknown_experts_implementation_is_an_error():
    with pytest.raises(ValueError, match="'fast'.*reference.*grouped"):
        moe.set_experts_impl("fast")
