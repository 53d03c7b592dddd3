"""The decode step of a continuous batch: one token for every KV-cache slot, with fixed shapes when asked.

Its inputs are persistent device tensors that the batch updates in place between steps — `tokens` [B] (last token
per slot), `positions` [3, B, 1] (its rotary position) and `lengths` [B] (tokens cached per slot) — so the step has
no host synchronisation and no data-dependent Python branch, and can be compiled or captured. Legend: B slots,
L keys attended, V vocabulary.
"""

from __future__ import annotations

import os
import warnings

import torch

DECODE_MODES = ("auto", "eager", "static", "compile", "graph")
CAPTURE_AFTER = 8  # uncaptured steps before a CUDA graph is captured: short-lived batches never pay for a capture


def resolve_decode_mode(mode: str, device: torch.device) -> str:
    """The decode mode to run: "auto" is $ERNIE_VL_DECODE when set, else "graph" on CUDA and "eager" elsewhere."""
    if mode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {mode!r}; choose one of {DECODE_MODES}")
    if mode == "auto":
        mode = os.environ.get("ERNIE_VL_DECODE", "auto")
        if mode not in DECODE_MODES:
            raise ValueError(f"ERNIE_VL_DECODE={mode!r}: choose one of {DECODE_MODES}")
    if mode == "auto":
        return "graph" if device.type == "cuda" else "eager"
    if mode == "graph" and device.type != "cuda":
        raise ValueError(f"decode mode 'graph' captures a CUDA graph and needs a CUDA device, not {device}")
    return mode


def decode_slots(model, tokens_B, positions_3B1, cache, lengths_B, attend_len: int) -> torch.Tensor:
    """Slot b holds its sequence from position 0: write the new token at `lengths_B[b]`, attend to keys
    0..lengths_B[b] among the first `attend_len` positions. Next-token logits [B, V]."""
    keys_BL = torch.arange(attend_len, device=lengths_B.device)[None, :] <= lengths_B[:, None]
    return model.decode(tokens_B, positions_3B1, cache, lengths_B, keys_BL)


def compile_decode():
    """`decode_slots` through torch.compile as one graph (shared by every `DecodeStep` of a batch: fixed shapes
    recompile only for a new slot count or capacity)."""
    return torch.compile(decode_slots, dynamic=False, fullgraph=True)


class DecodeStep:
    """The decode step over `batch` KV-cache slots of `capacity` tokens. Modes:
    * "eager": keys cut at the longest slot each step (the least work; the default on CPU);
    * "static": fixed shapes (keys up to the capacity, masked per slot) — exactly what the next two run;
    * "compile": the fixed-shape step through `torch.compile(fullgraph=True)` (fused elementwise kernels);
    * "graph": the fixed-shape step captured once in a CUDA graph and replayed (no per-kernel launch cost), after
      `CAPTURE_AFTER` uncaptured steps, so that a batch that lives only a few steps never pays for a capture.
    A failing capture or compilation falls back, with a warning, to the same fixed-shape step uncaptured."""

    def __init__(self, model, batch: int, capacity: int, mode: str, compiled=None):
        dev = model.device
        self.model, self.batch, self.capacity, self.mode = model, batch, capacity, mode
        self.cache = model.new_cache(batch, capacity)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=dev)
        self.positions = torch.zeros(3, batch, 1, dtype=torch.long, device=dev)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=dev)
        self._fn = compiled if mode == "compile" else decode_slots
        self._graph = None
        self._logits = None
        self._compiled_ok = False
        self._calls = 0

    def _run(self, attend_len: int) -> torch.Tensor:
        L = attend_len if self.mode == "eager" else self.capacity
        return self._fn(self.model, self.tokens, self.positions, self.cache, self.lengths, L)

    def __call__(self, attend_len: int) -> torch.Tensor:
        """Next-token logits [B, V] for every slot (rows of free slots are meaningless). `attend_len`: the longest
        slot's length + 1, known on the host (used by the eager mode only)."""
        if self.mode == "graph" and self._graph is None:
            self._calls += 1
            if self._calls <= CAPTURE_AFTER:  # e.g. a server's batch that empties after a few tokens
                return self._run(attend_len)
            try:
                self._capture()
            except RuntimeError as e:  # e.g. a kernel that synchronises: run the same fixed-shape step uncaptured
                self._fallback("CUDA graph capture", e)
        elif self.mode == "compile" and not self._compiled_ok:
            try:
                out = self._run(attend_len)
                self._compiled_ok = True
                return out
            except Exception as e:  # noqa: BLE001 - any compiler failure: the eager step computes the same
                self._fallback("torch.compile", e)
        if self.mode == "graph":
            self._graph.replay()
            return self._logits
        return self._run(attend_len)

    def _fallback(self, what: str, err: Exception) -> None:
        warnings.warn(f"{what} of the decode step failed ({type(err).__name__}: {str(err)[:300]}); "
                      "running the fixed-shape step without it", RuntimeWarning, stacklevel=3)
        self.mode, self._graph, self._fn = "static", None, decode_slots

    def _capture(self) -> None:
        # Warm-up runs (on a side stream, as capture requires) write K/V at each slot's next position, which the
        # first real step overwrites before anything attends to it.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run(self.capacity)
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._logits = self._run(self.capacity)
