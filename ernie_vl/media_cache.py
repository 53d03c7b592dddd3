"""Processed images and videos kept for reuse on the preprocessing side: a medium that several samples use (an
MMBench question's rotated copies, a Video-MME video's three questions) is decoded, resized and patchified once per
preprocessing actor while it stays in the cache.

A medium is known by what it came from — its bytes (hashed) or a file path with its size and modification time — and
by the processing settings (frame sampling for videos); other inputs (PIL images, arrays) are processed every time.
Bounded in bytes of pixel rows; the least recently used entries leave first; hits are counted.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from typing import Any, Callable

import torch


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


class ProcessedMediaCache:
    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self._entries: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def process(self, kind: str, items: list, run: Callable[[list[int]], dict], settings: tuple = ()) -> dict:
        """`run(indices)` processes the items at those indices (one call, in order) for those not cached; returns
        what `run` returns, for all `items`: `pixel_values[_videos]`, `*_grid_thw` and, for videos,
        `video_metadata`."""
        rows_key, grid_key = ("pixel_values", "image_grid_thw") if kind == "image" else (
            "pixel_values_videos", "video_grid_thw")
        keys = [None if (k := source_key(x)) is None else f"{kind}:{settings!r}:{k}" for x in items]
        parts: list = [None] * len(items)
        for i, k in enumerate(keys):
            if k is not None and k in self._entries:
                self._entries.move_to_end(k)
                parts[i] = self._entries[k]
                self.hits += 1
        todo = [i for i, p in enumerate(parts) if p is None]
        if todo:
            out = run(todo)
            grids = out[grid_key]
            rows = out[rows_key].split(grids.prod(-1).tolist())
            metas = out.get("video_metadata") or [None] * len(todo)
            for j, i in enumerate(todo):
                parts[i] = (rows[j], grids[j: j + 1], metas[j])
                if keys[i] is not None:
                    self._put(keys[i], parts[i])
        result = {rows_key: torch.cat([p[0] for p in parts]), grid_key: torch.cat([p[1] for p in parts])}
        if kind == "video":
            result["video_metadata"] = [p[2] for p in parts]
        return result

    def _put(self, key: str, entry: tuple) -> None:
        size = entry[0].numel() * entry[0].element_size()
        if size > self.max_bytes:
            return
        self._entries[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, gone = self._entries.popitem(last=False)
            self.bytes -= gone[0].numel() * gone[0].element_size()
