"""Vision features encoded before their prefill: the engine encodes the images/videos of the requests it will admit
next while the current batch decodes, and `ContinuousBatch.admit(rows, features)` takes them.

On CUDA the encoding runs on a side stream, so the vision tower's matmuls overlap the decode steps' weight reads;
elsewhere it is the same work done earlier (no overlap). Features are split per request by the token counts the
processor computed (`VisionBatch.tokens`): nothing is read back from the device.
"""

from __future__ import annotations

import torch

from .inputs import ModelInputs, VisionBatch


class VisionAhead:
    def __init__(self, model, requests: list[ModelInputs]):
        self.model, self.requests = model, requests
        self.feats: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.stream = torch.cuda.Stream(model.device) if model.device.type == "cuda" else None

    def _encode(self, todo: list[int]) -> None:
        reqs = [self.requests[i] for i in todo]
        parts = {}
        for kind in ("images", "videos"):
            have = [getattr(r, kind) for r in reqs if getattr(r, kind) is not None]
            if not have:
                parts[kind] = [None] * len(reqs)
                continue
            it = iter(self.model.encode(VisionBatch.cat(have)).split([v.num_tokens for v in have]))
            parts[kind] = [next(it) if getattr(r, kind) is not None else None for r in reqs]
        for j, i in enumerate(todo):
            self.feats[i] = (parts["images"][j], parts["videos"][j])

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

    def take(self, admit: list[int]) -> dict:
        """`image_features` / `video_features` for a prefill of `admit` (in order), encoding what is missing."""
        self.launch(admit)
        feats = [self.feats.pop(i) for i in admit if i in self.feats]
        if self.stream is not None:
            main = torch.cuda.current_stream()
            main.wait_stream(self.stream)
            for f in (t for pair in feats for t in pair if t is not None):
                f.record_stream(main)  # made on the side stream, read on this one
        out = {}
        for k, name in enumerate(("image_features", "video_features")):
            got = [pair[k] for pair in feats if pair[k] is not None]
            if got:
                out[name] = torch.cat(got)
        return out
