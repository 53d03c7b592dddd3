"""Token types and 3-D rope positions, made on the host, against transformers 5.23.0's `get_rope_index`; and the two
ways the project builds a batch's metadata (per sequence then `ModelBatch.collate`, or `ModelBatch.from_tensors` on a
padded batch) agree with each other."""

from __future__ import annotations

import pytest
import torch
from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration

from ernie_vl.config import named_config
from ernie_vl.inputs import ModelBatch, ModelInputs
from ernie_vl.positions import get_rope_index, token_types

IMG, IMG_S, IMG_E, VID, VID_S, VID_E, PAD = 10, 11, 12, 13, 14, 15, 0


@pytest.fixture(scope="module")
def cfg_and_ref():
    cfg = named_config("tiny")
    cfg.image_token_id, cfg.image_start_token_id, cfg.image_end_token_id = IMG, IMG_S, IMG_E
    cfg.video_token_id, cfg.video_start_token_id, cfg.video_end_token_id = VID, VID_S, VID_E
    return cfg, Ernie4_5_VLMoeForConditionalGeneration(Ernie4_5_VLMoeConfig(**cfg.to_hf_dict())).model


def _sequence(g, parts):
    """parts: ("text", n) | ("image", h, w) | ("video", t, h, w) -> ModelInputs.build arguments."""
    ids, images, videos = [], [], []
    for p in parts:
        if p[0] == "text":
            ids.append(torch.randint(20, 1000, (p[1],), generator=g))
        elif p[0] == "image":
            h, w = p[1:]
            ids.append(torch.tensor([IMG_S] + [IMG] * (h * w // 4) + [IMG_E]))
            images.append((torch.randn(h * w, 588, generator=g), [1, h, w]))
        else:
            t, h, w = p[1:]
            ids.append(torch.tensor([VID_S] + [VID] * (t * h * w // 8) + [VID_E]))
            videos.append((torch.randn(t * h * w, 588, generator=g), [t, h, w]))
    kw = {}
    if images:
        kw.update(pixel_values=torch.cat([x for x, _ in images]), image_grid_thw=torch.tensor([gr for _, gr in images]))
    if videos:
        kw.update(pixel_values_videos=torch.cat([x for x, _ in videos]),
                  video_grid_thw=torch.tensor([gr for _, gr in videos]))
    return torch.cat(ids), kw


LAYOUTS = [
    [("text", 6)],
    [("text", 3), ("image", 4, 4), ("text", 9)],
    [("text", 2), ("video", 4, 2, 4), ("text", 2)],
    [("image", 2, 6), ("text", 3), ("video", 2, 4, 4), ("text", 1)],
    [("text", 2), ("video", 12, 2, 2), ("text", 3)],  # T' = 6 > max(H', W') = 1: the last position is not the max
]


def test_positions_and_next_position_match_transformers(cfg_and_ref):
    cfg, ref = cfg_and_ref
    g = torch.Generator().manual_seed(0)
    seqs = [_sequence(g, parts) for parts in LAYOUTS]
    items = [ModelInputs.build(ids, cfg, **kw) for ids, kw in seqs]
    batch = ModelBatch.collate(items, PAD)
    kw = batch.transformers_kwargs()
    mm, _ = token_types(kw["input_ids"], cfg)
    ref_pos, ref_delta = ref.get_rope_index(kw["input_ids"], mm, kw.get("image_grid_thw"), kw.get("video_grid_thw"),
                                            kw["attention_mask"])
    real = kw["attention_mask"].bool()
    assert torch.equal(batch.position_ids[:, real], ref_pos[:, real])
    ours_pos, ours_delta = get_rope_index(kw["input_ids"], mm, kw.get("image_grid_thw"), kw.get("video_grid_thw"),
                                          kw["attention_mask"])
    assert torch.equal(ours_pos[:, real], ref_pos[:, real]) and torch.equal(ours_delta, ref_delta)
    # the first generated token's position: transformers' generate extends position_ids by last + 1 on each row
    assert torch.equal(batch.next_positions, ref_pos[:, :, -1] + 1)
    # ... which is not the rope_deltas rule (max + 1) for the last layout: the parity test of that case matters
    n_real = kw["attention_mask"].sum(-1)
    assert batch.next_positions[0, -1] < n_real[-1] + ref_delta[-1, 0]


def test_collate_and_from_tensors_agree(cfg_and_ref):
    """Per-sequence metadata shifted by `collate` == the same metadata computed on the padded batch."""
    cfg, _ = cfg_and_ref
    g = torch.Generator().manual_seed(1)
    items = [ModelInputs.build(ids, cfg, **kw) for ids, kw in (_sequence(g, p) for p in LAYOUTS)]
    a = ModelBatch.collate(items, PAD)
    b = ModelBatch.from_tensors(a.input_ids, a.attention_mask, cfg, **{
        k: v for k, v in a.transformers_kwargs().items() if k not in ("input_ids", "attention_mask")})
    for name in ("input_ids", "attention_mask", "position_ids", "next_positions", "text_index", "vision_index",
                 "image_index", "video_index"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.lengths == b.lengths == [x.num_prompt_tokens for x in items]
    for kind in ("images", "videos"):
        va, vb = getattr(a, kind), getattr(b, kind)
        assert va.grids == vb.grids and va.segments == vb.segments and va.tokens == vb.tokens
        assert torch.equal(va.pair_first, vb.pair_first) and torch.equal(va.patch_pos, vb.patch_pos)
    # every token is in exactly one pool, and the vision pool holds the placeholders plus their start/end tokens
    flat = a.input_ids.reshape(-1)
    assert sorted(torch.cat([a.text_index, a.vision_index]).tolist()) == list(range(flat.numel()))
    vis_ids = set(flat[a.vision_index].tolist())
    assert vis_ids <= {IMG, IMG_S, IMG_E, VID, VID_S, VID_E} and set(flat[a.text_index].tolist()).isdisjoint(vis_ids)


def test_mismatched_placeholders_name_the_problem(cfg_and_ref):
    cfg, _ = cfg_and_ref
    ids = torch.tensor([1, IMG_S, IMG, IMG, IMG_E])
    with pytest.raises(ValueError, match="2 placeholder tokens in input_ids, 4 feature rows"):
        ModelInputs.build(ids, cfg, torch.randn(16, 588), torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="pixel_values given without image_grid_thw"):
        ModelInputs.build(ids, cfg, torch.randn(8, 588))
