"""Encoded vision features kept for reuse: each distinct medium goes through the vision tower and resampler once per
replica while it stays in the cache.

Keys are content hashes made on the preprocessing side (`inputs.VisionBatch.keys`: the processed pixel rows, their
grid and kind), so two files with the same pixels share an entry and different processing settings (which change the
rows) do not. Bounded in bytes; the least recently used entries leave first; hits and misses are counted.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class FeatureCache:
    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> torch.Tensor | None:
        """The features of `key` (marked as recently used), or None; counts a hit or a miss."""
        feats = self._entries.get(key)
        if feats is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return feats

    def put(self, key: str, feats: torch.Tensor) -> None:
        """Keep `feats` under `key`, evicting the least recently used entries beyond `max_bytes` (an entry larger
        than the whole budget is not kept)."""
        size = feats.numel() * feats.element_size()
        if key in self._entries:
            old = self._entries.pop(key)
            self.bytes -= old.numel() * old.element_size()
        if size > self.max_bytes:
            return
        self._entries[key] = feats
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, gone = self._entries.popitem(last=False)
            self.bytes -= gone.numel() * gone.element_size()
