"""The memory arithmetic counts exactly the parameters the model has."""

from ernie_vl.config import named_config
from ernie_vl.bench.memory import kv_bytes_per_token, kv_capacity, weight_bytes
from ernie_vl.model import ErnieVLForConditionalGeneration


def test_weight_bytes_match_the_model():
    for name in ("tiny", "small"):
        cfg = named_config(name)
        model = ErnieVLForConditionalGeneration(cfg)
        assert sum(weight_bytes(cfg, 4).values()) == sum(p.numel() * 4 for p in model.parameters())


def test_28b_capacity_arithmetic():
    cfg = named_config("28b-a3b")
    assert kv_bytes_per_token(cfg) == 28 * 2 * 4 * 128 * 2
    full, split = kv_capacity(cfg, 80), kv_capacity(cfg, 80, without_vision_experts=True)
    assert split["kv_tokens"] > full["kv_tokens"] > 0
    assert abs(full["weights_gb"] - 58.8) < 0.5


def test_expert_parallel_projection_matches_a_sharded_model():
    """Per-rank weights of the projection equal the parameters a rank really holds after `shard_model`."""
    from ernie_vl.expert_parallel import Placement, shard_model
    from ernie_vl.bench.memory import expert_parallel_projection

    cfg = named_config("small")
    for K in (2, 4):
        model = ErnieVLForConditionalGeneration(cfg)
        shard_model(model, 0, Placement.even(cfg.text.moe_num_experts, K))
        held = sum(p.numel() * 4 for p in model.parameters())
        proj = expert_parallel_projection(cfg, K, card_gb=80, batch=8, bytes_per_elem=4)
        assert abs(proj["weights_per_rank_gb"] * 1e9 - held) < 1e-3 * held
    assert expert_parallel_projection(cfg, 1, 80, 8)["a2a_bytes_per_token"] == 0
