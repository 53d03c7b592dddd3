"""The processor -> model hand-off: one sequence's inputs (`ModelInputs`) and a left-padded batch (`ModelBatch`).

Everything the model needs besides the weights is computed here, once, on the host — on a CPU preprocessing actor
for the batch pipeline and the server — so that the model's prefill and decode steps never read device values back
(no `.tolist()`, `.item()`, `nonzero()` or data-dependent branches on the model side; model-spec §6.3, §8.2-8.3):

    ModelInputs (one sequence, no padding)            ModelBatch (B sequences, left-padded to S)
      input_ids      [S]     int64                      input_ids, attention_mask   [B, S]
      position_ids   [3, S]  int64 (t, h, w rope)       position_ids                [3, B, S]   (pads 0)
                                                        next_positions              [3, B] first new token's
      moe_vision     [Tv]    vision-pool token idx      text_index / vision_index   flat [B*S] indices per pool
      image_spans / video_spans: (start, end) of each   image_index / video_index   flat indices of placeholders
        medium's placeholder run                        images / videos             VisionBatch | None
      pixel rows + grids per kind

`VisionBatch` carries the pixel rows of one kind with their host-side metadata: grids as Python ints, ViT patch
positions, per-item segments for per-frame attention and the resampler's frame-pair indices.

NOTE: the first generated token takes the last prompt position + 1 on each of the three rows, as transformers'
`generate` extends `position_ids`; the model's own `rope_deltas` (and vLLM) would give max(position_ids) + 1, which
differs when a video with T' > max(H', W') ends near the end of the prompt. We follow the reference's `generate`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .positions import IMAGE, VIDEO, get_rope_index, token_types, vision_patch_positions


@dataclass(frozen=True)
class MediaTokens:
    """Token ids and merge sizes that shape model inputs (from a `ModelConfig` or the processor's tokenizer)."""

    image_token_id: int
    video_token_id: int
    image_start_token_id: int | None = None
    image_end_token_id: int | None = None
    video_start_token_id: int | None = None
    video_end_token_id: int | None = None
    spatial_merge_size: int = 2
    temporal_merge_size: int = 2

    @classmethod
    def of(cls, source: Any) -> "MediaTokens":
        """From a `MediaTokens`, a `ModelConfig` or an `ErnieVLForConditionalGeneration`."""
        if isinstance(source, cls):
            return source
        cfg = getattr(source, "config", source)
        return cls(
            cfg.image_token_id, cfg.video_token_id, cfg.image_start_token_id, cfg.image_end_token_id,
            cfg.video_start_token_id, cfg.video_end_token_id, cfg.vision.spatial_merge_size,
            cfg.vision.temporal_merge_size,
        )


# ------------------------------------------------------------------------------------------------ vision
@dataclass
class VisionBatch:
    """Pixel rows of several images (or videos) with the host-side metadata the vision tower and resampler use.

    pixels [N, C*14*14]; grids: (t, h, w) in patches per item (`grid_thw`: the same as an int64 [n, 3] tensor);
    patch_pos [N, 2] (row, col) of every patch row; segments (offset, frames, patches per frame) per item;
    pair_first / pair_second [M]: merged-row indices of each output token's two frames; tokens [n] per item;
    keys [n]: a content hash per item (kind, grid and the processed pixel rows), the key of the engine's feature cache."""

    pixels: torch.Tensor
    grids: list[tuple[int, int, int]]
    patch_pos: torch.Tensor
    segments: list[tuple[int, int, int]]
    pair_first: torch.Tensor
    pair_second: torch.Tensor
    tokens: list[int]
    keys: list[str]
    kind: str = "image"
    merge: int = 2
    temporal: int = 2

    @classmethod
    def build(cls, pixels: torch.Tensor, grid_thw, kind: str, merge: int = 2, temporal: int = 2) -> "VisionBatch":
        """Check the rows against the grids and compute the metadata. `kind` is "image" or "video" (videos merge
        frame pairs; images use their single frame twice)."""
        grid_thw = torch.as_tensor(grid_thw, dtype=torch.long).reshape(-1, 3).cpu()
        grids = [tuple(int(v) for v in g) for g in grid_thw.tolist()]
        n_expected = sum(t * h * w for t, h, w in grids)
        if pixels.dim() != 2 or pixels.shape[0] != n_expected:
            raise ValueError(f"pixel rows {tuple(pixels.shape)} do not match grid_thw {[list(g) for g in grids]} "
                             f"(expected [{n_expected}, {pixels.shape[-1] if pixels.dim() else '?'}])")
        if any(h % merge or w % merge for _, h, w in grids):
            raise ValueError(f"grid_thw {[list(g) for g in grids]}: h and w must be multiples of {merge}")
        if kind == "video" and any(t % temporal for t, _, _ in grids):
            raise ValueError(f"video_grid_thw {[list(g) for g in grids]}: frame counts must be even (pad the last "
                             f"frame)")
        segments, first, second, tokens, keys, off, row = [], [], [], [], [], 0, 0
        for t, h, w in grids:
            segments.append((off, t, h * w))
            keys.append(_content_key(kind, (t, h, w), pixels[off: off + t * h * w]))
            off += t * h * w
            per_frame = h * w // merge**2
            pairs = list(zip(range(0, t, 2), range(1 if t > 1 else 0, t, 2)))  # an image (t = 1): its frame twice
            for a, b in pairs:
                first.append(torch.arange(row + a * per_frame, row + (a + 1) * per_frame))
                second.append(torch.arange(row + b * per_frame, row + (b + 1) * per_frame))
            row += t * per_frame
            tokens.append(len(pairs) * per_frame)
        empty = torch.zeros(0, dtype=torch.long)
        return cls(
            pixels, grids, vision_patch_positions(grid_thw, merge) if grids else torch.zeros(0, 2, dtype=torch.long),
            segments, torch.cat(first) if first else empty, torch.cat(second) if second else empty, tokens, keys,
            kind, merge, temporal,
        )

    def select(self, items: list[int]) -> "VisionBatch":
        """A batch of some of these items, in the order given."""
        rows = [self.pixels[o: o + t * hw] for o, t, hw in (self.segments[i] for i in items)]
        return VisionBatch.build(torch.cat(rows), [self.grids[i] for i in items], self.kind, self.merge, self.temporal)

    @classmethod
    def cat(cls, parts: list["VisionBatch"]) -> "VisionBatch | None":
        """Items of several batches in order (offsets shifted)."""
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        segs, firsts, seconds, off, row = [], [], [], 0, 0
        for p in parts:
            segs += [(o + off, t, hw) for o, t, hw in p.segments]
            firsts.append(p.pair_first + row)
            seconds.append(p.pair_second + row)
            off += p.pixels.shape[0]
            row += p.pixels.shape[0] // p.merge**2
        return cls(
            torch.cat([p.pixels for p in parts]), [g for p in parts for g in p.grids], torch.cat([p.patch_pos for p in parts]), segs,
            torch.cat(firsts), torch.cat(seconds), [n for p in parts for n in p.tokens],
            [k for p in parts for k in p.keys], parts[0].kind, parts[0].merge, parts[0].temporal,
        )

    @property
    def num_tokens(self) -> int:
        return sum(self.tokens)

    @property
    def grid_thw(self) -> torch.Tensor:
        return torch.tensor(self.grids, dtype=torch.long).reshape(-1, 3)

    def to(self, device, non_blocking: bool = False) -> "VisionBatch":
        move = lambda x: x.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(self, pixels=move(self.pixels), patch_pos=move(self.patch_pos),
                       pair_first=move(self.pair_first), pair_second=move(self.pair_second))


# ------------------------------------------------------------------------------------------------ one sequence
@dataclass
class ModelInputs:
    """One sequence's model inputs, made once on the host by `ModelInputs.build` (the processor calls it)."""

    input_ids: torch.Tensor  # [S] int64
    position_ids: torch.Tensor  # [3, S] int64
    moe_vision: torch.Tensor  # [Tv] int64: positions routed to the vision experts (placeholders + start/end)
    image_spans: list[tuple[int, int]] = field(default_factory=list)
    video_spans: list[tuple[int, int]] = field(default_factory=list)
    images: VisionBatch | None = None
    videos: VisionBatch | None = None

    @classmethod
    def build(cls, input_ids, tokens: Any, pixel_values: torch.Tensor | None = None,
              image_grid_thw: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
              video_grid_thw: torch.Tensor | None = None) -> "ModelInputs":
        """Types, 3-D positions, spans and vision metadata of one unpadded sequence. `tokens`: `MediaTokens` or a
        `ModelConfig`. Raises ValueError naming what does not match (placeholders vs grids vs pixel rows)."""
        mt = MediaTokens.of(tokens)
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1).cpu()
        images = _vision(pixel_values, image_grid_thw, "image", mt)
        videos = _vision(pixel_values_videos, video_grid_thw, "video", mt)
        mm, moe = token_types(ids[None], mt)
        check_placeholders(mm, images, videos)
        pos, _ = get_rope_index(ids[None], mm, image_grid_thw, video_grid_thw, None, mt.spatial_merge_size,
                                mt.temporal_merge_size)
        spans = _spans(mm[0])
        for kind, batch, found in (("image", images, spans[IMAGE]), ("video", videos, spans[VIDEO])):
            n_items = 0 if batch is None else len(batch.grids)
            if len(found) != n_items:
                raise ValueError(f"{len(found)} {kind} placeholder run(s) in input_ids but {n_items} {kind}(s) given")
        pos = pos[:, 0]
        return cls(ids, pos, (moe[0] != 0).nonzero().reshape(-1),
                   spans[IMAGE], spans[VIDEO], images, videos)

    @property
    def num_prompt_tokens(self) -> int:
        return int(self.input_ids.numel())

    def media_bounds(self) -> list[tuple[int, int, str]]:
        """(start, end, content key) of every medium's placeholder run, in sequence order."""
        out = []
        for spans, batch in ((self.image_spans, self.images), (self.video_spans, self.videos)):
            out += [(a, b, k) for (a, b), k in zip(spans, batch.keys if batch is not None else [])]
        return sorted(out)

    def slice(self, a: int, b: int) -> "ModelInputs":
        """Tokens [a, b) with their positions (those of the whole sequence) and the media inside; no medium's
        placeholder run may cross a or b."""
        for s, e, _ in self.media_bounds():
            if s < a < e or s < b < e:
                raise ValueError(f"slice [{a}, {b}) cuts the placeholder run [{s}, {e}) of a medium")
        vis = self.moe_vision[(self.moe_vision >= a) & (self.moe_vision < b)] - a
        parts = {}
        for name, spans, batch in (("image", self.image_spans, self.images), ("video", self.video_spans, self.videos)):
            keep = [i for i, (s, e) in enumerate(spans) if a <= s and e <= b]
            parts[name] = ([(s - a, e - a) for s, e in (spans[i] for i in keep)],
                           batch.select(keep) if batch is not None and keep else None)
        return ModelInputs(self.input_ids[a:b], self.position_ids[:, a:b], vis, parts["image"][0],
                           parts["video"][0], parts["image"][1], parts["video"][1])

    @property
    def num_visual_tokens(self) -> int:
        return sum(b - a for a, b in self.image_spans + self.video_spans)


def check_placeholders(mm: torch.Tensor, images: VisionBatch | None, videos: VisionBatch | None) -> None:
    """Placeholder tokens of each kind (from `mm` token types) must equal the feature rows its media give."""
    for name, kind, batch in (("image", IMAGE, images), ("video", VIDEO, videos)):
        n_tokens = int((mm == kind).sum())
        check_feature_rows(name, n_tokens, 0 if batch is None else batch.num_tokens)


def check_feature_rows(name: str, n_tokens: int, n_feats: int) -> None:
    if n_tokens != n_feats:
        raise ValueError(f"{name} features and {name} tokens do not match: {n_tokens} placeholder tokens in "
                         f"input_ids, {n_feats} feature rows from the {name} inputs")


def _vision(pixels, grid, kind: str, mt: MediaTokens) -> VisionBatch | None:
    if pixels is None and grid is None:
        return None
    name = "pixel_values" if kind == "image" else "pixel_values_videos"
    if grid is None:
        raise ValueError(f"{name} given without {kind}_grid_thw")
    if pixels is None:
        raise ValueError(f"{kind}_grid_thw given without {name}")
    return VisionBatch.build(pixels, grid, kind, mt.spatial_merge_size, mt.temporal_merge_size)


def _spans(mm_S: torch.Tensor) -> dict[int, list[tuple[int, int]]]:
    """(start, end) of every maximal run of image / video placeholders."""
    out: dict[int, list[tuple[int, int]]] = {IMAGE: [], VIDEO: []}
    types = mm_S.tolist()
    start = 0
    for i in range(1, len(types) + 1):
        if i == len(types) or types[i] != types[start]:
            if types[start] in out:
                out[types[start]].append((start, i))
            start = i
    return out


# ------------------------------------------------------------------------------------------------ a batch
@dataclass
class ModelBatch:
    """B sequences left-padded to S, with every index the model's prefill uses (see the module docstring)."""

    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, S]
    position_ids: torch.Tensor  # [3, B, S]
    next_positions: torch.Tensor  # [3, B]: rope position of each row's first new token (last prompt position + 1)
    text_index: torch.Tensor  # [Tt] flat indices into B*S: tokens of the text experts (padding included)
    vision_index: torch.Tensor  # [Tv] flat indices: tokens of the vision experts
    image_index: torch.Tensor  # flat indices of image placeholders, batch-major (the order of image features)
    video_index: torch.Tensor
    images: VisionBatch | None = None
    videos: VisionBatch | None = None
    lengths: list[int] = field(default_factory=list)  # real tokens per row

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)  # type: ignore[return-value]

    @classmethod
    def collate(cls, items: list[ModelInputs], pad_token_id: int = 0) -> "ModelBatch":
        """Left-pad sequences into one batch; vision items concatenated in sequence order. Pure index arithmetic."""
        B, S = len(items), max(x.num_prompt_tokens for x in items)
        ids = torch.full((B, S), pad_token_id, dtype=torch.long)
        mask = torch.zeros(B, S, dtype=torch.long)
        pos = torch.zeros(3, B, S, dtype=torch.long)
        text, vision, image, video = [], [], [], []
        for b, x in enumerate(items):
            n = x.num_prompt_tokens
            off = b * S + S - n
            ids[b, S - n:] = x.input_ids
            mask[b, S - n:] = 1
            pos[:, b, S - n:] = x.position_ids
            is_text = torch.ones(n, dtype=torch.bool)
            is_text[x.moe_vision] = False
            text += [torch.arange(b * S, off), torch.arange(off, off + n)[is_text]]
            vision.append(x.moe_vision + off)
            image += [torch.arange(a + off, e + off) for a, e in x.image_spans]
            video += [torch.arange(a + off, e + off) for a, e in x.video_spans]
        nxt = pos[:, :, -1] + 1
        return cls(ids, mask, pos, nxt, torch.cat(text), torch.cat(vision), _cat_index(image), _cat_index(video),
                   VisionBatch.cat([x.images for x in items if x.images is not None]),
                   VisionBatch.cat([x.videos for x in items if x.videos is not None]),
                   [x.num_prompt_tokens for x in items])

    @classmethod
    def from_tensors(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, tokens: Any,
                     pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None
                     ) -> "ModelBatch":
        """A batch from transformers-shaped tensors (any padding side): the processor-side computation of types,
        positions and indices, run here on the host for callers that hold raw tensors (`model.forward`)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        mt = MediaTokens.of(tokens)
        ids = input_ids.cpu().long()
        B, S = ids.shape
        mask = torch.ones(B, S, dtype=torch.long) if attention_mask is None else attention_mask.cpu().long()
        if mask.shape != (B, S):
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, expected {(B, S)}")
        images = _vision(pixel_values, image_grid_thw, "image", mt)
        videos = _vision(pixel_values_videos, video_grid_thw, "video", mt)
        mm, moe = token_types(ids, mt)
        check_placeholders(mm, images, videos)
        pos, _ = get_rope_index(ids, mm, image_grid_thw, video_grid_thw, mask, mt.spatial_merge_size,
                                mt.temporal_merge_size)
        vis = (moe != 0).reshape(-1)
        nxt = pos[:, :, -1] + 1 if S else torch.zeros(3, B, dtype=torch.long)
        flat_mm = mm.reshape(-1)
        return cls(ids, mask, pos, nxt, (~vis).nonzero().reshape(-1), vis.nonzero().reshape(-1),
                   (flat_mm == IMAGE).nonzero().reshape(-1), (flat_mm == VIDEO).nonzero().reshape(-1),
                   images, videos, mask.sum(-1).tolist())

    def transformers_kwargs(self) -> dict[str, torch.Tensor]:
        """The batch as `model.forward` / `generate` and transformers take it (ids, mask, pixel rows, grids)."""
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.images is not None:
            out.update(pixel_values=self.images.pixels, image_grid_thw=self.images.grid_thw)
        if self.videos is not None:
            out.update(pixel_values_videos=self.videos.pixels, video_grid_thw=self.videos.grid_thw)
        return out

    def to(self, device, non_blocking: bool = False) -> "ModelBatch":
        move = lambda x: x.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(
            self, input_ids=move(self.input_ids), attention_mask=move(self.attention_mask),
            position_ids=move(self.position_ids), next_positions=move(self.next_positions),
            text_index=move(self.text_index), vision_index=move(self.vision_index),
            image_index=move(self.image_index), video_index=move(self.video_index),
            images=None if self.images is None else self.images.to(device, non_blocking),
            videos=None if self.videos is None else self.videos.to(device, non_blocking),
        )


def _content_key(kind: str, grid: tuple[int, int, int], rows: torch.Tensor) -> str:
    data = rows.detach().cpu().contiguous()
    digest = hashlib.blake2b(data.view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()
    return f"{kind}:{'x'.join(map(str, grid))}:{data.dtype}:{digest}"


def _cat_index(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
