"""Memory arithmetic for a model shape: weights by part, KV bytes per token, and KV-cache capacity on a card.

Vision experts are read only while prefilling visual tokens; decode never touches them. Placing them elsewhere
(e.g. the modality-aware expert-parallel plan, which puts the vision pool on its own rank) frees their bytes for KV
cache on the decode ranks. `python -m ernie_vl.bench memory` prints the table for the 28B shape on 80 and 141 GB cards.
"""

from __future__ import annotations

import argparse
import json

from ..config import ModelConfig, named_config


def weight_bytes(cfg: ModelConfig, bytes_per_param: int = 2) -> dict[str, int]:
    """Bytes of each part of the model (routers and correction biases counted in float32)."""
    t, v = cfg.text, cfg.vision
    D = t.hidden_size
    n_sparse = len(t.sparse_layers)
    n_dense = t.num_hidden_layers - n_sparse
    attn = t.num_hidden_layers * D * t.head_dim * (2 * t.num_attention_heads + 2 * t.num_key_value_heads)
    norms = t.num_hidden_layers * 2 * D + D
    dense = n_dense * 3 * D * t.intermediate_size
    text_experts = n_sparse * t.moe_num_experts * 3 * D * t.moe_intermediate_size[0]
    vision_experts = n_sparse * t.moe_num_experts * 3 * D * t.moe_intermediate_size[1]
    shared = n_sparse * 3 * D * t.shared_intermediate_size
    routers = n_sparse * 2 * (t.moe_num_experts * D + t.moe_num_experts)  # float32
    embed = t.vocab_size * D * (1 if cfg.tie_word_embeddings else 2)
    vd, sd = v.hidden_size, v.hidden_size * v.spatial_merge_size**2
    vit = v.patch_dim * vd + v.depth * (4 * vd * vd + 4 * vd + 2 * vd * v.intermediate_size + v.intermediate_size + vd
                                       + 4 * vd) + 2 * vd
    resampler = (sd * sd + sd) * 2 + 2 * sd + (2 * sd * sd + sd) + (sd * sd + sd) + 2 * sd + sd * D + D + D
    b = bytes_per_param
    return {
        "attention": attn * b, "norms": norms * b, "dense_mlp": dense * b, "text_experts": text_experts * b,
        "vision_experts": vision_experts * b, "shared_experts": shared * b, "routers_fp32": routers * 4,
        "embeddings": embed * b, "vision_tower": vit * b, "resampler": resampler * b,
    }


def kv_bytes_per_token(cfg: ModelConfig, bytes_per_elem: int = 2) -> int:
    t = cfg.text
    return t.num_hidden_layers * 2 * t.num_key_value_heads * t.head_dim * bytes_per_elem


def kv_capacity(cfg: ModelConfig, card_gb: float, reserve_gb: float = 4.0, without_vision_experts: bool = False) -> dict:
    """Tokens of KV cache that fit on one card holding the whole model (optionally minus the vision experts)."""
    w = weight_bytes(cfg)
    weights = sum(w.values()) - (w["vision_experts"] if without_vision_experts else 0)
    free = card_gb * 1e9 - weights - reserve_gb * 1e9
    per_tok = kv_bytes_per_token(cfg)
    return {"card_gb": card_gb, "weights_gb": weights / 1e9, "reserve_gb": reserve_gb,
            "kv_gb": max(free, 0) / 1e9, "kv_tokens": int(max(free, 0) // per_tok),
            "without_vision_experts": without_vision_experts}


def expert_parallel_projection(cfg: ModelConfig, K: int, card_gb: float, batch: int, reserve_gb: float = 4.0,
                               bytes_per_elem: int = 2) -> dict:
    """Arithmetic for a replica of K ranks (even expert split, K cards): weights and KV capacity per rank, and the
    all-to-all volume. Every routed-expert assignment of a token held by another rank is sent there and its result
    sent back; with requests spread evenly and routing independent of the rank, (K-1)/K of them leave their rank.
    A projection: it assumes balanced routing and ignores the collectives' fixed latency."""
    t = cfg.text
    w = weight_bytes(cfg, bytes_per_elem)
    experts = w["text_experts"] + w["vision_experts"]
    per_rank = sum(w.values()) - experts + experts / K
    free = card_gb * 1e9 - per_rank - reserve_gb * 1e9
    per_token = 2 * t.moe_k * t.hidden_size * bytes_per_elem * (K - 1) / K * len(t.sparse_layers)  # out and back
    return {"K": K, "card_gb": card_gb, "weights_per_rank_gb": per_rank / 1e9,
            "kv_tokens_per_rank": int(max(free, 0) // kv_bytes_per_token(cfg, bytes_per_elem)),
            "a2a_bytes_per_token": per_token,
            "a2a_mb_per_decode_step_per_rank": per_token * batch / K / 1e6}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", default="28b-a3b")
    p.add_argument("--cards", default="80,141")
    p.add_argument("--reserve-gb", type=float, default=4.0, help="activations, CUDA context, allocator slack")
    p.add_argument("--expert-shards", default="1,2,4,8", help="replica sizes K for the expert-parallel projection")
    p.add_argument("--batch", type=int, default=64, help="decode batch of the whole replica, for the a2a volume")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ernie_vl.bench memory", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def run(a: argparse.Namespace) -> int:
    cfg = named_config(a.shape)
    w = weight_bytes(cfg)
    out = {
        "shape": a.shape,
        "weights_gb": {k: round(v / 1e9, 2) for k, v in w.items()},
        "total_weights_gb": round(sum(w.values()) / 1e9, 2),
        "kv_bytes_per_token": kv_bytes_per_token(cfg),
        "capacity": [kv_capacity(cfg, float(c), a.reserve_gb, wv) for c in a.cards.split(",") for wv in (False, True)],
        "expert_parallel_projection": [expert_parallel_projection(cfg, int(k), float(c), a.batch, a.reserve_gb)
                                       for c in a.cards.split(",") for k in a.expert_shards.split(",")],
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
