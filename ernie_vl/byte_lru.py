"""A cache bounded in bytes (and optionally in entries) that drops the least recently used entries first and counts
hits and misses: the one eviction rule behind the vision-feature cache (`vision_ahead`), the processed-media cache
(`media_cache`) and the prompt keys/values cache (`prefix`)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator


def tensor_bytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class ByteLRU:
    def __init__(self, max_bytes: int, max_entries: int | None = None):
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Any, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def get(self, key) -> Any | None:
        """The value of `key` (now the most recently used), or None; counts a hit or a miss."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def items(self) -> Iterator[tuple[Any, Any]]:
        """(key, value) pairs, least recently used first, without touching them."""
        return ((k, v) for k, (v, _) in list(self._entries.items()))

    def put(self, key, value, size: int) -> None:
        """Keep `value` under `key` (replacing an entry of that key), then drop the least recently used entries
        beyond the bounds; a value larger than the whole budget is not kept."""
        if key in self._entries:
            self.bytes -= self._entries.pop(key)[1]
        if size > self.max_bytes:
            return
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes or (self.max_entries is not None and len(self._entries) > self.max_entries):
            self.bytes -= self._entries.popitem(last=False)[1][1]
