"""The benchmark's hardware floor counts the work our engine really does."""

import torch

import ernie_vl
from ernie_vl import moe
from ernie_vl.inputs import ModelInputs
from ernie_vl.bench.roofline import floor, workload_costs


def _reqs(model):
    c = model.config
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.randint(20, 500, (7,), generator=g),
                     torch.tensor([c.image_start_token_id] + [c.image_token_id] * 4 + [c.image_end_token_id])])
    return [ModelInputs.build(ids, c, torch.randn(16, 588, generator=g), torch.tensor([[1, 4, 4]])),
            ModelInputs.build(torch.randint(20, 500, (5,), generator=g), c)]


def test_grouped_expert_flops_are_counted_like_the_reference_loop(tiny_dir):
    """The grouped path's FLOPs come from our formula for `_grouped_mm`, the reference loop's from torch's own
    matmul counting: the totals must agree, so no expert work is missed or counted twice."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = _reqs(model)
    grouped = workload_costs(model, reqs, new_tokens=4)
    moe.set_experts_impl("reference")
    try:
        reference = workload_costs(model, reqs, new_tokens=4)
    finally:
        moe.set_experts_impl("grouped")
    assert grouped["prefill_flops"] == reference["prefill_flops"] > 0
    assert grouped["decode_flops_per_step"] == reference["decode_flops_per_step"] > 0


def test_decode_bytes_lie_between_the_dense_weights_and_all_text_weights(tiny_dir):
    model = ernie_vl.load_model(tiny_dir)
    costs = workload_costs(model, _reqs(model), new_tokens=4)
    lm = model.model.language_model
    size = lambda ps: sum(p.numel() * p.element_size() for p in ps)  # noqa: E731
    dense = size(p for n, p in lm.named_parameters() if ".experts." not in n and "embed" not in n)
    dense += size(model.lm_head.parameters())
    text_experts = size(p for n, p in lm.named_parameters() if "text_moe.experts." in n)
    kv_max = 2 * 2 * model.config.text.num_hidden_layers * model.config.text.num_key_value_heads \
        * model.config.text.head_dim * 4 * 32
    assert dense < costs["decode_bytes_per_step"] <= dense + text_experts + kv_max
    assert 1 <= costs["experts_touched_per_layer_step"] <= model.config.text.moe_num_experts
    f = floor(costs, matmul_flops_s=1e9, bytes_s=1e9)
    assert f["total_s"] == f["prefill_s"] + f["decode_s"] and f["prefill_s"] == costs["prefill_flops"] / 1e9
