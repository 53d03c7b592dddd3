"""Processed images and videos kept for reuse on the preprocessing side: a medium that several samples use (an
MMBench question's rotated copies, a Video-MME video's three questions) is decoded, resized and patchified once per
preprocessing actor while it stays in the cache.

A medium is known by what it came from — its bytes (hashed) or a file path with its size and modification time — and
by the processing settings (frame sampling for videos); other inputs (PIL images, arrays) are processed every time.
Bounded in bytes of pixel rows (`ByteLRU`).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import torch

from .byte_lru import ByteLRU, tensor_bytes


def source_key(item: Any) -> str | None:
    """An identity for an image/video input, or None when it has none (then it is not cached)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "bytes:" + hashlib.blake2b(bytes(item), digest_size=16).hexdigest()
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        try:
            st = os.stat(path)
        except OSError:
            return None  # not a readable file (a URL, a missing path): the processor reports it
        return f"path:{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    return None


class ProcessedMediaCache(ByteLRU):
    def __init__(self, max_bytes: int = 1 << 30):
        super().__init__(max_bytes)

    def process(self, kind: str, items: list, run: Callable[[list[int]], dict], settings: tuple = ()) -> dict:
        """`run(indices)` processes the items at those indices (one call, in order) for those not cached; returns
        what `run` returns, for all `items`: `pixel_values[_videos]`, `*_grid_thw` and, for videos,
        `video_metadata`."""
        rows_key, grid_key = ("pixel_values", "image_grid_thw") if kind == "image" else (
            "pixel_values_videos", "video_grid_thw")
        keys = [None if (k := source_key(x)) is None else f"{kind}:{settings!r}:{k}" for x in items]
        parts: list = [None if k is None else self.get(k) for k in keys]
        todo = [i for i, p in enumerate(parts) if p is None]
        if todo:
            out = run(todo)
            grids = out[grid_key]
            rows = out[rows_key].split(grids.prod(-1).tolist())
            metas = out.get("video_metadata") or [None] * len(todo)
            for j, i in enumerate(todo):
                parts[i] = (rows[j], grids[j: j + 1], metas[j])
                if keys[i] is not None:
                    self.put(keys[i], parts[i], tensor_bytes(rows[j]))
        result = {rows_key: torch.cat([p[0] for p in parts]), grid_key: torch.cat([p[1] for p in parts])}
        if kind == "video":
            result["video_metadata"] = [p[2] for p in parts]
        return result
