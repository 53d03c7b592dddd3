"""Parity with transformers 5.23.0 `Ernie4_5_VLMoeForConditionalGeneration`: same random weights, fp32, CPU.

Covers text-only, one image, several images of different sizes, videos (odd and even numbers of frame pairs), a
left-padded batch mixing all of them, expert choices per token, greedy continuations, both experts implementations,
the default layer pattern (dense first) and an all-MoE pattern without shared experts.
"""

from __future__ import annotations

import pytest
import torch

import transformers  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip
from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration  # noqa: E402

from ernie_vl import moe  # noqa: E402
from ernie_vl.config import named_config  # noqa: E402
from ernie_vl.model import ErnieVLForConditionalGeneration  # noqa: E402
from ernie_vl.positions import token_types  # noqa: E402
from ernie_vl.tiny import random_state  # noqa: E402

TOL = 1e-4
IMG, IMG_S, IMG_E, VID, VID_S, VID_E, PAD = 10, 11, 12, 13, 14, 15, 0


def _cfg(pattern: str):
    if pattern == "dense-first":
        cfg = named_config("tiny")
    else:  # every layer MoE, no shared experts
        cfg = named_config("tiny").replace(mlp_layer_types=["sparse"] * 3, moe_num_shared_experts=0)
    cfg.image_token_id, cfg.image_start_token_id, cfg.image_end_token_id = IMG, IMG_S, IMG_E
    cfg.video_token_id, cfg.video_start_token_id, cfg.video_end_token_id = VID, VID_S, VID_E
    return cfg


@pytest.fixture(scope="module", params=["dense-first", "all-moe-no-shared"])
def pair(request):
    cfg = _cfg(request.param)
    sd = random_state(cfg, seed=1)
    ours = ErnieVLForConditionalGeneration(cfg)
    missing, unexpected = ours.load_state_dict(sd, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # tied head
    ref = Ernie4_5_VLMoeForConditionalGeneration(Ernie4_5_VLMoeConfig(**cfg.to_hf_dict()))
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected
    return cfg, ours.eval(), ref.eval()


def _text(g, n):
    return torch.randint(20, 1000, (n,), generator=g)


def _image_segment(g, h, w):
    """Tokens and pixel rows of one image with an (h, w) patch grid."""
    ids = torch.cat([torch.tensor([IMG_S]), torch.full((h * w // 4,), IMG), torch.tensor([IMG_E])])
    return ids, torch.randn(h * w, 588, generator=g), [1, h, w]


def _video_segment(g, t, h, w):
    ids = torch.cat([torch.tensor([VID_S]), torch.full((t * h * w // 8,), VID), torch.tensor([VID_E])])
    return ids, torch.randn(t * h * w, 588, generator=g), [t, h, w]


def _sample(g, parts):
    """parts: list of ("text", n) | ("image", h, w) | ("video", t, h, w) -> ids, images, videos."""
    ids, images, videos = [], [], []
    for p in parts:
        if p[0] == "text":
            ids.append(_text(g, p[1]))
        elif p[0] == "image":
            i, px, grid = _image_segment(g, *p[1:])
            ids.append(i), images.append((px, grid))
        else:
            i, px, grid = _video_segment(g, *p[1:])
            ids.append(i), videos.append((px, grid))
    return torch.cat(ids), images, videos


def _batch(samples):
    """Left-pad samples into one batch; vision inputs concatenated in batch order."""
    L = max(len(s[0]) for s in samples)
    ids = torch.full((len(samples), L), PAD)
    mask = torch.zeros(len(samples), L, dtype=torch.long)
    imgs, vids = [], []
    for b, (i, im, vi) in enumerate(samples):
        ids[b, L - len(i):] = i
        mask[b, L - len(i):] = 1
        imgs += im
        vids += vi
    kw = {"input_ids": ids, "attention_mask": mask}
    if imgs:
        kw["pixel_values"] = torch.cat([p for p, _ in imgs])
        kw["image_grid_thw"] = torch.tensor([gr for _, gr in imgs])
    if vids:
        kw["pixel_values_videos"] = torch.cat([p for p, _ in vids])
        kw["video_grid_thw"] = torch.tensor([gr for _, gr in vids])
    return kw


def _ref_kwargs(cfg, kw):
    mm, moe_types = token_types(kw["input_ids"], cfg)
    return {**kw, "mm_token_type_ids": mm, "moe_mm_token_type_ids": moe_types}


CASES = {
    "text": [[("text", 17)]],
    "one-image": [[("text", 5), ("image", 4, 6), ("text", 7)]],
    "images-of-different-sizes": [[("text", 3), ("image", 4, 6), ("text", 2), ("image", 8, 2), ("image", 2, 2), ("text", 4)]],
    "video-2-pairs": [[("text", 4), ("video", 4, 4, 4), ("text", 5)]],
    "video-3-pairs": [[("text", 4), ("video", 6, 2, 4), ("text", 5)]],
    "video-long": [[("text", 2), ("video", 12, 2, 2), ("text", 3)]],  # T' > max(H', W'): text overlaps video time
    "padded-mixed-batch": [
        [("text", 6)],
        [("text", 3), ("image", 4, 4), ("text", 9)],
        [("text", 2), ("video", 4, 2, 4), ("text", 2)],
        [("image", 2, 6), ("text", 3), ("video", 2, 4, 4), ("text", 1)],
    ],
}


def _max_real_diff(a, b, mask):
    return (a - b).abs()[mask.bool()].max().item()


@pytest.mark.parametrize("impl", ["grouped", "reference"])
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match(pair, case, impl):
    cfg, ours, ref = pair
    g = torch.Generator().manual_seed(hash(case) % 1000)
    kw = _batch([_sample(g, parts) for parts in CASES[case]])
    moe.set_experts_impl(impl)
    try:
        with torch.no_grad():
            a = ours(**kw).logits
            b = ref(**_ref_kwargs(cfg, kw)).logits
    finally:
        moe.set_experts_impl("grouped")
    assert a.shape == b.shape
    diff = _max_real_diff(a, b, kw["attention_mask"])
    assert diff <= TOL, f"{case}: max |logits diff| {diff:.3g}"


def test_expert_choices_match(pair):
    cfg, ours, ref = pair
    g = torch.Generator().manual_seed(7)
    kw = _batch([_sample(g, p) for p in CASES["padded-mixed-batch"]])
    ours_rec = []
    for layer in ours.model.language_model.layers:
        if layer.is_moe:
            for pool in (layer.mlp.text_moe, layer.mlp.vision_moe):
                pool.record = ours_rec
    ref_rec = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: ref_rec.append(out[2]))
        for name, m in ref.named_modules()
        if name.endswith(("text_moe.gate", "vision_moe.gate"))
    ]
    try:
        with torch.no_grad():
            ours(**kw)
            ref(**_ref_kwargs(cfg, kw))
    finally:
        for h in hooks:
            h.remove()
        for layer in ours.model.language_model.layers:
            if layer.is_moe:
                layer.mlp.text_moe.record = layer.mlp.vision_moe.record = None
    assert len(ours_rec) == len(ref_rec) == 2 * len(cfg.text.sparse_layers)
    # each pool sees its tokens in flattened order; compare the real (non-padding) ones
    _, moe_types = token_types(kw["input_ids"], cfg)
    real = kw["attention_mask"].bool().flatten()
    vis = (moe_types != 0).flatten()
    keep = {0: real[~vis], 1: real[vis]}
    for i, (a, b) in enumerate(zip(ours_rec, ref_rec)):
        k = keep[i % 2]
        assert a.shape[0] == b.shape[0] == k.shape[0]
        assert torch.equal(a[k].sort(-1).values, b[k].sort(-1).values), f"router call {i}"


def test_greedy_continuations_match(pair):
    cfg, ours, ref = pair
    g = torch.Generator().manual_seed(3)
    kw = _batch([_sample(g, p) for p in CASES["padded-mixed-batch"]])
    with torch.no_grad():
        a = ours.generate(**kw, max_new_tokens=16)
        b = ref.generate(**_ref_kwargs(cfg, kw), max_new_tokens=16, do_sample=False, pad_token_id=PAD)
    assert a.shape == b.shape == (4, kw["input_ids"].shape[1] + 16)
    assert torch.equal(a, b)
    assert len(set(a[:, -16:].flatten().tolist())) > 3  # the random model does not just repeat one token


def test_generate_stops_per_row_at_eos(pair):
    cfg, ours, _ = pair
    g = torch.Generator().manual_seed(5)
    kw = _batch([_sample(g, [("text", 8)]), _sample(g, [("text", 5)])])
    free = ours.generate(**kw, max_new_tokens=12)
    eos = int(free[0, kw["input_ids"].shape[1] + 2])  # row 0's third new token becomes the stop token
    out = ours.generate(**kw, max_new_tokens=12, eos_token_id=eos, pad_token_id=PAD)
    new = out[0, kw["input_ids"].shape[1]:]
    first = (new == eos).nonzero()[0].item()
    assert first <= 2 and (new[first + 1:] == PAD).all()
    # the other row keeps its own continuation up to its own stop
    other = out[1, kw["input_ids"].shape[1]:]
    ref_other = free[1, kw["input_ids"].shape[1]: kw["input_ids"].shape[1] + len(other)]
    stop = (ref_other == eos).nonzero()
    upto = stop[0].item() + 1 if len(stop) else len(other)
    assert torch.equal(other[:upto], ref_other[:upto])


def test_greedy_continuations_match_when_a_video_ends_the_prompt(pair):
    """A video with T' > max(H', W') near the end of the prompt: transformers' generate continues from the last
    prompt position + 1 (not the max + 1 of its rope_deltas), and so do we."""
    cfg, ours, ref = pair
    g = torch.Generator().manual_seed(4)
    kw = _batch([_sample(g, [("text", 2), ("video", 12, 2, 2), ("text", 2)]), _sample(g, [("text", 5)])])
    with torch.no_grad():
        a = ours.generate(**kw, max_new_tokens=8)
        b = ref.generate(**_ref_kwargs(cfg, kw), max_new_tokens=8, do_sample=False, pad_token_id=PAD)
    assert torch.equal(a, b)


@pytest.mark.parametrize("case", [c for c in CASES if len(CASES[c]) == 1])
def test_unpadded_prefill_matches(pair, case):
    """One unpadded prompt from position 0 takes SDPA's causal path (no mask) in `prefill`: same logits."""
    from ernie_vl.inputs import ModelBatch, ModelInputs

    cfg, ours, ref = pair
    g = torch.Generator().manual_seed(7)
    ids, images, videos = _sample(g, CASES[case][0])
    kw = _batch([(ids, images, videos)])
    media = {k: kw[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw") if k in kw}
    batch = ModelBatch.collate([ModelInputs.build(ids, cfg, **media)])
    assert batch.lengths == [len(ids)]  # nothing padded: the causal path
    with torch.no_grad():
        got = ours.prefill(batch, logits_to_keep=0).logits
        want = ref(**_ref_kwargs(cfg, kw)).logits
    assert (got - want).abs().max().item() < TOL


def test_vision_tower_in_frame_groups_is_exact(pair, monkeypatch):
    """On CPU the tower runs over groups of whole frames: identical output to one pass over everything, for images
    of different sizes and a video, whatever the group budget (a frame larger than the budget is its own group)."""
    from ernie_vl import vision
    from ernie_vl.inputs import VisionBatch

    cfg, ours, _ = pair
    g = torch.Generator().manual_seed(3)
    tower = ours.model.vision_tower
    for kind, grids in (("image", [[1, 4, 6], [1, 8, 2], [1, 2, 2]]), ("video", [[6, 2, 4], [2, 4, 4]])):
        pixels = torch.cat([torch.randn(t * h * w, 588, generator=g) for t, h, w in grids])
        vb = VisionBatch.build(pixels, torch.tensor(grids), kind)
        with torch.no_grad():
            monkeypatch.setattr(vision, "CPU_CHUNK_ROWS", None)
            whole = tower(vb.pixels, vb.patch_pos, vb.segments)
            for budget in (1, 8, 20, 33):
                monkeypatch.setattr(vision, "CPU_CHUNK_ROWS", budget)
                assert torch.equal(tower(vb.pixels, vb.patch_pos, vb.segments), whole), (kind, budget)


def test_frame_chunks():
    from ernie_vl.vision import frame_chunks

    segs = [(0, 1, 24), (24, 3, 8), (48, 2, 4)]
    assert list(frame_chunks(segs, None)) == [(0, 56, segs)]
    assert list(frame_chunks(segs, 20)) == [(0, 24, [(0, 1, 24)]), (24, 40, [(0, 2, 8)]),
                                            (40, 56, [(0, 1, 8), (8, 2, 4)])]
    assert [c[:2] for c in frame_chunks(segs, 1000)] == [(0, 56)]
