"""A preallocated KV cache: fixed-capacity buffers per layer, written in place (no concatenation per step).

Two ways to write: a shared offset for all rows (prefill, and decoding a left-padded batch), or one offset per row
(slots of a continuous batch, each holding its own sequence from position 0). Legend: B batch (slots), G kv heads,
C capacity, Dh head dim.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layers: int, batch: int, n_kv: int, capacity: int, head_dim: int, dtype, device):
        shape = (n_layers, batch, n_kv, capacity, head_dim)
        self.k_LBGCD = torch.zeros(shape, dtype=dtype, device=device)
        self.v_LBGCD = torch.zeros(shape, dtype=dtype, device=device)
        self.capacity = capacity
        self.length = 0  # tokens written so far (same for every row)
        self.view_len = capacity  # keys returned by a per-row update (set by the decode step)

    def update(self, layer: int, k_BGSD: torch.Tensor, v_BGSD: torch.Tensor, start):
        if isinstance(start, torch.Tensor):  # per-row offsets, one new token per row
            rows = torch.arange(k_BGSD.shape[0], device=k_BGSD.device)
            self.k_LBGCD[layer, rows, :, start] = k_BGSD[:, :, 0]
            self.v_LBGCD[layer, rows, :, start] = v_BGSD[:, :, 0]
            return self.k_LBGCD[layer, :, :, : self.view_len], self.v_LBGCD[layer, :, :, : self.view_len]
        end = start + k_BGSD.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} tokens for a capacity of {self.capacity}")
        self.k_LBGCD[layer, :, :, start:end] = k_BGSD
        self.v_LBGCD[layer, :, :, start:end] = v_BGSD
        return self.k_LBGCD[layer, :, :, :end], self.v_LBGCD[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the given batch rows (e.g. after dropping finished sequences)."""
        self.k_LBGCD = self.k_LBGCD[:, rows]
        self.v_LBGCD = self.v_LBGCD[:, rows]

    def load_rows(self, slots: list[int], src: "KVCache", src_rows: list[int], spans: list[tuple[int, int]],
                  at: int = 0) -> None:
        """Copy the cached tokens `src[row, :, a:b]` of other caches' rows into `slots`, starting at position `at`."""
        for slot, row, (a, b) in zip(slots, src_rows, spans):
            self.k_LBGCD[:, slot, :, at: at + b - a] = src.k_LBGCD[:, row, :, a:b]
            self.v_LBGCD[:, slot, :, at: at + b - a] = src.v_LBGCD[:, row, :, a:b]
