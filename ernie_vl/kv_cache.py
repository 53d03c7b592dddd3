"""A preallocated KV cache: fixed-capacity buffers per layer, written in place (no concatenation per step).

All rows of a batch share one write offset (left padding keeps prompts right-aligned), so a decode step has fixed
shapes. Legend: B batch, G kv heads, C capacity, Dh head dim.
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

    def update(self, layer: int, k_BGSD: torch.Tensor, v_BGSD: torch.Tensor, start: int):
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
