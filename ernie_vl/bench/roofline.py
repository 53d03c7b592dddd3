"""The hardware floor of a generation workload: what no implementation of the same arithmetic can beat.

Counted on a real run of our engine (so it follows the actual routing): the floating-point operations of the prefill
(every matmul, attention and grouped expert matmul), and for each decode step its operations and the bytes it must
read — the weights a text token touches (attention, dense and shared MLPs, the LM head, and only the routed
experts some row of the batch chose) plus the cached keys and values. With the card's measured matmul rate and
memory bandwidth this gives a floor time per phase: prefill = FLOPs / rate, a decode step = max(FLOPs / rate,
bytes / bandwidth). Dividing a measured time by the floor gives the fraction of the hardware an implementation
reaches, and the reference's time by the floor bounds the speed-up any implementation could have over it.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..engine import Engine
from ..generation import GenerationSettings
from ..inputs import ModelInputs


def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[-1]


def _sdpa_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    *lead, Sq, Dh = q_shape
    n = 1
    for d in lead:
        n *= d
    return 4 * n * Sq * k_shape[-2] * Dh  # Q K^T and P V, every query head (GQA shares keys, not work)


_aten = torch.ops.aten
_CUSTOM = {  # ops torch's counter leaves at zero (its SDPA rules cover only some of the fused kernels)
    _aten._grouped_mm: _grouped_mm_flops,
    _aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
    _aten._scaled_dot_product_flash_attention: _sdpa_flops,
    _aten._scaled_dot_product_efficient_attention: _sdpa_flops,
    _aten._scaled_dot_product_cudnn_attention: _sdpa_flops,
}


def _count(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter:
        fn()
    return int(counter.get_total_flops())


def _nbytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def workload_costs(model, reqs: list[ModelInputs], new_tokens: int) -> dict:
    """FLOPs of the prefill; FLOPs and bytes read of the decode steps (one batch of `reqs`, greedy, full length)."""
    engine = Engine(model, max_batch_size=len(reqs), max_batch_tokens=1 << 30, decode="eager", reuse=False)
    prefill_flops = _count(lambda: engine.generate(reqs, GenerationSettings(max_new_tokens=1)))
    lm = model.model.language_model
    pools = [layer.mlp.text_moe for layer in lm.layers if layer.is_moe]
    for pool in pools:
        pool.record = []
    try:
        total_flops = _count(lambda: engine.generate(reqs, GenerationSettings(max_new_tokens=new_tokens)))
        touched = [[int(idx.unique().numel()) for idx in pool.record[1:]] for pool in pools]  # [0] is the prefill
    finally:
        for pool in pools:
            pool.record = None
    steps = new_tokens - 1
    always = [p for n, p in lm.named_parameters() if ".experts." not in n and "embed_tokens" not in n]
    always_bytes = _nbytes(always) + _nbytes(model.lm_head.parameters())
    expert_bytes = [_nbytes([pool.experts.gate_up_proj[0], pool.experts.down_proj[0]]) for pool in pools]
    t = model.config.text
    kv_per_token = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * model.dtype.itemsize
    prompt = sum(r.num_prompt_tokens for r in reqs)
    step_bytes = []
    for s in range(steps):
        experts = sum(n_touched[s] * b for n_touched, b in zip(touched, expert_bytes))
        kv = kv_per_token * (prompt + len(reqs) * (s + 1))
        step_bytes.append(always_bytes + experts + kv)
    return {
        "prefill_flops": prefill_flops,
        "decode_flops_per_step": (total_flops - prefill_flops) / steps,
        "decode_bytes_per_step": sum(step_bytes) / steps,
        "decode_steps": steps,
        "experts_touched_per_layer_step": sum(map(sum, touched)) / max(1, sum(map(len, touched))),
    }


def floor(costs: dict, matmul_flops_s: float, bytes_s: float) -> dict:
    """Floor times (seconds) of a workload on a device with the given measured ceilings."""
    prefill = costs["prefill_flops"] / matmul_flops_s
    step = max(costs["decode_flops_per_step"] / matmul_flops_s, costs["decode_bytes_per_step"] / bytes_s)
    decode = step * costs["decode_steps"]
    return {"prefill_s": prefill, "decode_s": decode, "total_s": prefill + decode}
