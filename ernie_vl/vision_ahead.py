"""Vision features of the requests a continuous batch will admit, encoded before their prefill (and, with a
`ByteLRU` keyed by `VisionBatch.keys`, once per distinct medium): `ContinuousBatch.admit(rows, features)` takes them.

`launch(upcoming)` encodes requests ahead: on CUDA on a side stream, so the vision tower's matmuls overlap the decode
steps' weight reads (elsewhere it is the same work done earlier); `take(admit)` returns the features of a prefill,
encoding what is missing. With a cache, a medium whose content key (`VisionBatch.keys`) is cached is not encoded
again, and media repeated within the requests are encoded once. Features are split per request and per medium by the
token counts the processor computed: nothing is read back from the device.
"""

from __future__ import annotations

import torch

from .byte_lru import ByteLRU, tensor_bytes
from .inputs import ModelInputs, VisionBatch

KINDS = ("images", "videos")


class VisionAhead:
    def __init__(self, model, requests: list[ModelInputs], cache: ByteLRU | None = None, overlap: bool = True):
        self.model, self.requests, self.cache = model, requests, cache
        self.feats: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.stream = torch.cuda.Stream(model.device) if overlap and model.device.type == "cuda" else None
        self.encoded = 0  # media items run through the vision tower
        self.reused_by_request: dict[int, int] = {}  # request index -> its media items not encoded for it

    def _encode(self, todo: list[int]) -> None:
        reqs = [self.requests[i] for i in todo]
        parts = {}
        for kind in KINDS:
            have = [getattr(r, kind) for r in reqs if getattr(r, kind) is not None]
            if not have:
                parts[kind] = [None] * len(reqs)
                continue
            per_request, reused = self._features(have)
            it, jt = iter(per_request), iter(reused)
            parts[kind] = [next(it) if getattr(r, kind) is not None else None for r in reqs]
            for i, r in zip(todo, reqs):
                if getattr(r, kind) is not None:
                    self.reused_by_request[i] = self.reused_by_request.get(i, 0) + next(jt)
        for j, i in enumerate(todo):
            self.feats[i] = (parts["images"][j], parts["videos"][j])

    def _features(self, batches: list[VisionBatch]) -> tuple[list[torch.Tensor], list[int]]:
        """Each batch's features, in item order, and how many of its items were not encoded for it: one encode of
        everything (no cache), or of the distinct items that are not cached (encoded for the first batch that has
        them)."""
        if self.cache is None:
            self.encoded += sum(len(v.keys) for v in batches)
            feats = self.model.encode(VisionBatch.cat(batches)).split([v.num_tokens for v in batches])
            return list(feats), [0] * len(batches)
        fresh: dict[str, torch.Tensor] = {}
        for k in dict.fromkeys(k for v in batches for k in v.keys):  # each distinct key looked up once
            if (got := self.cache.get(k)) is not None:
                fresh[k] = got
        missing: dict[str, VisionBatch] = {}
        for v in batches:
            for i, k in enumerate(v.keys):
                if k not in fresh and k not in missing:
                    missing[k] = v.select([i])
        if missing:
            todo = list(missing.values())
            for k, f in zip(missing, self.model.encode(VisionBatch.cat(todo)).split([v.num_tokens for v in todo])):
                fresh[k] = f
                self.cache.put(k, f, tensor_bytes(f))
        reused, owned = [], set()
        for v in batches:
            mine = [k for k in v.keys if k in missing and k not in owned]
            owned.update(mine)
            reused.append(len(v.keys) - len(mine))
        self.encoded += len(missing)
        return [torch.cat([fresh[k] for k in v.keys]) for v in batches], reused

    def launch(self, upcoming: list[int]) -> None:
        """Start encoding these requests' vision inputs (those not encoded yet)."""
        todo = [i for i in upcoming if i not in self.feats
                and (self.requests[i].images is not None or self.requests[i].videos is not None)]
        if not todo:
            return
        if self.stream is None:
            self._encode(todo)
            return
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            self._encode(todo)

    def take(self, admit: list[int]) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
        """Per request of `admit` (in order): its (image features, video features), encoding what is missing."""
        self.launch(admit)
        feats = [self.feats.pop(i, (None, None)) for i in admit]
        if self.stream is not None:
            main = torch.cuda.current_stream()
            main.wait_stream(self.stream)
            for f in (t for pair in feats for t in pair if t is not None):
                f.record_stream(main)  # made on the side stream, read on this one
        return feats
