"""Token types and position ids: text 3-D positions (`get_rope_index`) and ViT patch positions.

Mirrors transformers 5.23.0 `Ernie4_5_VLMoeModel.get_rope_index` and `vision_utils.get_vision_position_ids`
(model-spec §6.3, §8.2, §8.3). Everything here is metadata computed once per request, outside the hot path.
"""

from __future__ import annotations

import torch

TEXT, IMAGE, VIDEO = 0, 1, 2


def token_types(input_ids: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(mm_token_type_ids, moe_mm_token_type_ids), both like input_ids.

    `mm_token_type_ids` marks placeholders (1 image, 2 video) and drives 3-D positions; the MoE variant also marks the
    start/end tokens, which are routed to the vision experts while keeping 1-D positions.
    """
    mm = torch.zeros_like(input_ids)
    mm[input_ids == cfg.image_token_id] = IMAGE
    mm[input_ids == cfg.video_token_id] = VIDEO
    moe = mm.clone()
    moe[(input_ids == cfg.image_start_token_id) | (input_ids == cfg.image_end_token_id)] = IMAGE
    moe[(input_ids == cfg.video_start_token_id) | (input_ids == cfg.video_end_token_id)] = VIDEO
    return mm, moe


def _runs(types: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of equal values as (value, length)."""
    runs: list[tuple[int, int]] = []
    for v in types:
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1] + 1)
        else:
            runs.append((v, 1))
    return runs


def get_rope_index(
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    spatial_merge_size: int = 2,
    temporal_merge_size: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """3-D positions [3, B, S] (rows t, h, w; pads 0) and rope deltas [B, 1].

    Text runs advance by one per token on all three rows; a vision run with LLM grid (T', H', W') takes positions
    (start + t, start + h, start + w) and then advances the cursor by max(H', W') (NOTE: not by T' — that is what the
    reference does, so videos with T' > max(H', W') overlap the following text positions).
    Grids are consumed in order over the whole batch, images and videos separately.
    """
    B, S = input_ids.shape
    device = input_ids.device
    position_ids = torch.zeros(3, B, S, dtype=input_ids.dtype, device=device)
    grids = {
        IMAGE: iter(image_grid_thw.tolist()) if image_grid_thw is not None else iter(()),
        VIDEO: iter(video_grid_thw.tolist()) if video_grid_thw is not None else iter(()),
    }
    types_all = mm_token_type_ids.tolist()
    keep_all = attention_mask.bool().tolist() if attention_mask is not None else None
    deltas = []
    for b in range(B):
        types = types_all[b]
        if keep_all is not None:
            types = [t for t, k in zip(types, keep_all[b]) if k]
        chunks, cur = [], 0
        for kind, length in _runs(types):
            if kind == TEXT:
                chunks.append(torch.arange(cur, cur + length).expand(3, -1))
                cur += length
                continue
            try:
                t, h, w = next(grids[kind])
            except StopIteration:
                name = "image" if kind == IMAGE else "video"
                raise ValueError(f"sample {b} has more {name} placeholder runs than {name}_grid_thw rows") from None
            tm = 1 if kind == IMAGE else temporal_merge_size
            gt, gh, gw = t // tm, h // spatial_merge_size, w // spatial_merge_size
            if gt * gh * gw != length:
                raise ValueError(
                    f"sample {b}: a run of {length} {'image' if kind == IMAGE else 'video'} placeholders does not "
                    f"match its grid {[t, h, w]} ({gt * gh * gw} tokens)"
                )
            tt, hh, ww = torch.meshgrid(torch.arange(gt), torch.arange(gh), torch.arange(gw), indexing="ij")
            chunks.append(torch.stack([tt.flatten() + cur, hh.flatten() + cur, ww.flatten() + cur]))
            cur += max(h, w) // spatial_merge_size
        pos = torch.cat(chunks, dim=1) if chunks else torch.zeros(3, 0, dtype=torch.long)
        if keep_all is not None:
            position_ids[:, b, attention_mask[b].bool()] = pos.to(device, position_ids.dtype)
        else:
            position_ids[:, b] = pos.to(device, position_ids.dtype)
        deltas.append((int(pos.max()) + 1 if pos.numel() else 0) - len(types))
    return position_ids, torch.tensor(deltas, device=device, dtype=torch.long).unsqueeze(1)


def vision_patch_positions(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """[N, 2] (row, col) of every patch row, in the processor's 2x2-block order, repeated per frame."""
    out = []
    for t, h, w in grid_thw.tolist():
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        hh = hh.reshape(shape).transpose(1, 2).flatten()
        ww = ww.reshape(shape).transpose(1, 2).flatten()
        out.append(torch.stack([hh, ww], dim=-1).repeat(t, 1))
    return torch.cat(out).to(grid_thw.device)
