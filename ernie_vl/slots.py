"""Continuous batching over KV-cache slots: the one decode loop of the batch engine and of the server.

Rows (requests) join between decode steps. `ContinuousBatch.admit(rows)` prefills them together — one left-padded
batch (`collate`), `logits_to_keep=1`, into a temporary cache — and moves each sequence into a free slot from
position 0 (`KVCache.load_rows`); `step()` runs one decode step over every slot with per-slot lengths and positions
(`DecodeStep`: eager, fixed-shape, torch.compile'd, or replayed from a CUDA graph — it has no host synchronisation
and no data-dependent Python branch) and hands each live row its next token. A row that finishes (EOS, its token
budget, or its callback asks to stop) frees its slot at once, so short answers do not wait for long ones.

Every row carries its own settings (`RowParams`) and a callback that receives each token as soon as it exists. A
sampling row uses its own `torch.Generator` seeded with its seed, so a seeded row gives the same tokens whatever else
shares its batch; greedy rows give exactly the tokens of `model.generate` on the request alone.

Slots and capacity grow on demand (`reserve`; a server's batch starts empty and, with `release_when_idle`, gives its
KV memory back when the last row leaves); the batch engine reserves exactly what a call needs and keeps it (and a
captured graph) for the next call. Legend: B slots, V vocabulary.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .sampling import sample_next

_VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


@dataclass
class Prepared:
    """One request after preprocessing: tensors for a single sequence (batch dimension 1 or none)."""

    input_ids: torch.Tensor  # [S] int64
    pixel_values: torch.Tensor | None = None  # [N, 588]
    image_grid_thw: torch.Tensor | None = None  # [n_images, 3]
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_processor(cls, out: dict, meta: dict | None = None) -> "Prepared":
        """From `processor(...)` output for one conversation (padding, if any, is removed)."""
        ids = out["input_ids"]
        if ids.dim() == 2:
            if ids.shape[0] != 1:
                raise ValueError(f"expected one conversation, got a batch of {ids.shape[0]}")
            mask = out.get("attention_mask")
            ids = ids[0][mask[0].bool()] if mask is not None else ids[0]
        kw = {k: out.get(k) for k in _VISION_KEYS}
        return cls(input_ids=ids.long(), meta=dict(meta or {}), **kw)

    @property
    def num_prompt_tokens(self) -> int:
        return int(self.input_ids.numel())


def collate(batch: list[Prepared], pad_token_id: int = 0) -> dict:
    """Left-pad a list of prepared requests into model inputs; vision tensors concatenated in request order."""
    L = max(p.num_prompt_tokens for p in batch)
    ids = torch.full((len(batch), L), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(batch), L, dtype=torch.long)
    for b, p in enumerate(batch):
        n = p.num_prompt_tokens
        ids[b, L - n:] = p.input_ids
        mask[b, L - n:] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    for k in _VISION_KEYS:
        parts = [getattr(p, k) for p in batch if getattr(p, k) is not None]
        if parts:
            out[k] = torch.cat(parts)
    return out


@dataclass
class RowParams:
    """Generation settings of one row."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


class Row(Protocol):
    """What a slot holds: the request's inputs, its settings and where its tokens go."""

    prepared: Prepared
    params: RowParams

    def on_token(self, token: int, finish: str | None) -> bool:
        """`finish` is "stop" (EOS), "length" (budget spent) or None; return True to stop the row now."""


DECODE_MODES = ("auto", "eager", "static", "compile", "graph")
_BUCKET = 128  # fixed-shape steps round the cache capacity up to a multiple of this (fewer captures/compilations)
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


class DecodeStep:
    """The decode step of a continuous batch over `batch` KV-cache slots of `capacity` tokens.

    Its inputs are persistent tensors that the batch updates in place between steps: `tokens` [B] (last token per
    slot), `positions` [3, B, 1] (its rotary position) and `lengths` [B] (tokens cached per slot). Modes:
    * "eager": keys cut at the longest slot each step (the least work; the default on CPU);
    * "static": fixed shapes (keys up to the capacity, masked per slot) — exactly what the next two run;
    * "compile": the fixed-shape step through `torch.compile` (fused elementwise kernels);
    * "graph": the fixed-shape step captured once in a CUDA graph and replayed (no per-kernel launch cost), after
      `CAPTURE_AFTER` uncaptured steps, so that a batch that lives only a few steps never pays for a capture.
    """

    def __init__(self, model, batch: int, capacity: int, mode: str, compiled=None):
        dev = model.device
        self.model, self.batch, self.capacity, self.mode = model, batch, capacity, mode
        self.cache = model.new_cache(batch, capacity)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=dev)
        self.positions = torch.zeros(3, batch, 1, dtype=torch.long, device=dev)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=dev)
        self._fn = compiled if mode == "compile" else model.decode_slots
        self._graph = None
        self._logits = None
        self._compiled_ok = False
        self._calls = 0

    def _run(self) -> torch.Tensor:
        attend = None if self.mode == "eager" else self.capacity
        return self._fn(self.tokens, self.positions, self.cache, self.lengths, attend_len=attend)

    def __call__(self) -> torch.Tensor:
        """Next-token logits [B, V] for every slot (rows of free slots are meaningless)."""
        if self.mode == "graph" and self._graph is None:
            self._calls += 1
            if self._calls <= CAPTURE_AFTER:  # e.g. a server's batch that empties after a few tokens
                return self._run()
            try:
                self._capture()
            except RuntimeError as e:  # e.g. a kernel that synchronises: run the same fixed-shape step uncaptured
                self._fallback("CUDA graph capture", e)
        elif self.mode == "compile" and not self._compiled_ok:
            try:
                out = self._run()
                self._compiled_ok = True
                return out
            except Exception as e:  # noqa: BLE001 - any compiler failure: the eager step computes the same
                self._fallback("torch.compile", e)
        if self.mode == "graph":
            self._graph.replay()
            return self._logits
        return self._run()

    def _fallback(self, what: str, err: Exception) -> None:
        warnings.warn(f"{what} of the decode step failed ({type(err).__name__}: {str(err)[:300]}); "
                      "running the fixed-shape step without it", RuntimeWarning, stacklevel=3)
        self.mode, self._graph, self._fn = "static", None, self.model.decode_slots

    def _capture(self) -> None:
        # Warm-up runs (on a side stream, as capture requires) write K/V at each slot's next position, which the
        # first real step overwrites before anything attends to it.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run()
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._logits = self._run()


def _bucketed(n: int, unit: int = _BUCKET) -> int:
    return -(-n // unit) * unit


class VisionAhead:
    """Vision features of requests encoded before their prefill: the engine encodes the requests it will admit next
    while the current batch decodes (`ContinuousBatch.admit(rows, features)` takes them). On CUDA the encoding runs
    on a side stream, so the vision tower's matmuls overlap the decode steps' weight reads; elsewhere it is the same
    work done earlier (no overlap)."""

    def __init__(self, model, requests: list[Prepared]):
        self.model, self.requests = model, requests
        self.feats: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.stream = torch.cuda.Stream(model.device) if model.device.type == "cuda" else None

    def _encode(self, todo: list[int]) -> None:
        reqs = [self.requests[i] for i in todo]
        parts = {}
        cfg = self.model.config
        for key, grid_key, encode, token_id in (
            ("pixel_values", "image_grid_thw", self.model.encode_images, cfg.image_token_id),
            ("pixel_values_videos", "video_grid_thw", self.model.encode_videos, cfg.video_token_id),
        ):
            have = [r for r in reqs if getattr(r, key) is not None]
            if not have:
                parts[key] = [None] * len(reqs)
                continue
            feats = encode(torch.cat([getattr(r, key) for r in have]), torch.cat([getattr(r, grid_key) for r in have]))
            # one feature row per placeholder token (what `model.embed` checks)
            it = iter(feats.split([int((r.input_ids == token_id).sum()) for r in have]))
            parts[key] = [next(it) if getattr(r, key) is not None else None for r in reqs]
        for j, i in enumerate(todo):
            self.feats[i] = (parts["pixel_values"][j], parts["pixel_values_videos"][j])

    def launch(self, upcoming: list[int]) -> None:
        """Start encoding these requests' vision inputs (those not encoded yet)."""
        todo = [i for i in upcoming if i not in self.feats
                and (self.requests[i].pixel_values is not None or self.requests[i].pixel_values_videos is not None)]
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


def finish_reason(token: int, n_tokens: int, max_new_tokens: int, eos: set[int]) -> str | None:
    """Why a row ends with this token, its `n_tokens`-th: "stop" (EOS), "length" (budget spent) or None."""
    if token in eos:
        return "stop"
    return "length" if n_tokens >= max_new_tokens else None


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class ContinuousBatch:
    """The slots of one model's continuous batch. Not thread-safe: one thread drives it.

    `max_slots` / `max_batch_tokens`: the bounds `fits` applies for callers that admit rows as they come (the
    server). `exact`: `reserve` makes exactly the slots asked for (the batch engine: no idle slot is computed)
    instead of powers of two. `release_when_idle`: drop the cache when the last row leaves."""

    def __init__(self, model, eos_token_ids: list[int], pad_token_id: int = 0, max_slots: int = 32,
                 max_batch_tokens: int = 16384, decode: str = "auto", exact: bool = False,
                 release_when_idle: bool = True):
        self.model = model
        self.eos = set(int(e) for e in eos_token_ids)
        self.pad_token_id = pad_token_id
        self.max_slots = max_slots
        self.max_batch_tokens = max_batch_tokens
        self.decode_mode = resolve_decode_mode(decode, model.device)
        self.exact, self.release_when_idle = exact, release_when_idle
        self._compiled = torch.compile(model.decode_slots, dynamic=False) if self.decode_mode == "compile" else None
        self._release()

    # ------------------------------------------------------------------------------------------- state
    @property
    def active(self) -> list[int]:
        return [b for b, r in enumerate(self.rows) if r is not None]

    @property
    def free(self) -> list[int]:
        return [b for b, r in enumerate(self.rows) if r is None]

    @property
    def cache(self):
        return None if self._step is None else self._step.cache

    @property
    def capacity(self) -> int:
        return 0 if self._step is None else self._step.capacity

    @staticmethod
    def need(row: Row) -> int:
        """Cache positions a row may use: its prompt plus its token budget."""
        return row.prepared.num_prompt_tokens + row.params.max_new_tokens

    def fits(self, admitted: list[Row], row: Row) -> bool:
        """Whether `row` can join now, with `admitted` already chosen: a free slot, and padded work — longest need x
        rows — within `max_batch_tokens`. An idle batch takes any first row."""
        live = [r for r in self.rows if r is not None] + admitted
        if not live:
            return True
        if len(live) + 1 > self.max_slots:
            return False
        longest = max([self.need(r) for r in live] + [self.need(row)])
        return longest * (len(live) + 1) <= self.max_batch_tokens

    # ------------------------------------------------------------------------------------------- admission
    @torch.inference_mode()
    def admit(self, rows: list[Row], features: dict | None = None) -> None:
        """Prefill `rows` together into free slots; their first tokens go to the callbacks. `features`: their
        `image_features` / `video_features` when encoded beforehand (`VisionAhead`)."""
        if not rows:
            return
        self.reserve(len(self.active) + len(rows), max(self.need(r) for r in rows))
        slots = self.free[: len(rows)]
        model, st = self.model, self._step
        batch = [r.prepared for r in rows]
        inputs = collate(batch, self.pad_token_id)
        S = inputs["input_ids"].shape[1]
        tmp = model.new_cache(len(batch), S)
        out = model(**inputs, **(features or {}), cache=tmp, logits_to_keep=1)
        st.cache.load_rows(slots, tmp, list(range(len(batch))), [(S - p.num_prompt_tokens, S) for p in batch])
        for j, (slot, row) in enumerate(zip(slots, rows)):
            self.rows[slot] = row
            self.counts[slot] = 0
            self.gens[slot] = (torch.Generator(device=model.device).manual_seed(row.params.seed)
                               if row.params.do_sample else None)
            st.lengths[slot] = row.prepared.num_prompt_tokens
            st.positions[:, slot] = out.position_ids[:, j, -1:] + 1
        self._record(slots, torch.tensor(slots, device=model.device), out.logits[:, -1])

    # ------------------------------------------------------------------------------------------- decoding
    @torch.inference_mode()
    def step(self) -> None:
        """One decode step over the live slots."""
        active = self.active
        if not active:
            return
        if active != self._active_list:  # the slot set changed: a new device index (no host->device copy per step)
            self._active_list, self._active_idx = active, torch.tensor(active, device=self.model.device)
        st, rows = self._step, self._active_idx
        logits = st()
        st.lengths[rows] += 1
        st.positions[:, rows] += 1
        self._record(active, rows, logits[rows])

    def drop(self, slot: int) -> None:
        """Free a slot (its row was cancelled)."""
        self._free_slot(slot)
        if not self.active and self.release_when_idle:
            self._release()

    def reset(self) -> list[Row]:
        """Forget every row (after a failure); returns the rows that were live."""
        live = [r for r in self.rows if r is not None]
        self._release()
        return live

    def _free_slot(self, slot: int) -> None:
        self.rows[slot] = None
        self._step.lengths[slot] = 0

    def _record(self, slots: list[int], idx: torch.Tensor, logits_BV: torch.Tensor) -> None:
        """Pick the next token of `slots` (device index `idx`), with one device->host read, and hand them out."""
        nxt = sample_next(logits_BV)  # greedy for every row, then the sampling rows with their own generators
        for j, slot in enumerate(slots):
            p = self.rows[slot].params
            if p.do_sample and p.temperature > 0:
                nxt[j] = sample_next(logits_BV[j:j + 1], True, p.temperature, p.top_k, p.top_p, self.gens[slot])[0]
        self._step.tokens[idx] = nxt
        for slot, tok in zip(slots, nxt.tolist()):
            row = self.rows[slot]
            self.counts[slot] += 1
            finish = finish_reason(tok, self.counts[slot], row.params.max_new_tokens, self.eos)
            halted = row.on_token(tok, finish)
            if finish is not None or halted:
                self._free_slot(slot)
        if not self.active and self.release_when_idle:
            self._release()

    # ------------------------------------------------------------------------------------------- cache
    def _release(self) -> None:
        self.rows: list[Row | None] = []
        self.counts: list[int] = []
        self.gens: list[torch.Generator | None] = []
        self._step: DecodeStep | None = None
        self._active_list, self._active_idx = None, None

    def reserve(self, n_slots: int, capacity: int) -> None:
        """Make room for `n_slots` rows of up to `capacity` tokens, copying live rows into the new cache. Grows
        only while rows are live; an idle `exact` batch is remade to the size asked for."""
        B, old_cap = len(self.rows), self.capacity
        live = self.active
        if self.exact and not live and self._step is not None and (n_slots != B or capacity > old_cap
                                                                   or capacity < old_cap // 2):
            self._release()
            B, old_cap = 0, 0
        if n_slots <= B and capacity <= old_cap:
            return
        new_B = max(B, n_slots if self.exact else min(self.max_slots, _pow2(n_slots)))
        new_cap = max(old_cap, _bucketed(capacity, 64 if self.decode_mode == "eager" else _BUCKET))
        new = DecodeStep(self.model, new_B, new_cap, self.decode_mode, self._compiled)
        old = self._step
        if live:
            new.cache.load_rows(live, old.cache, live, [(0, int(old.lengths[b])) for b in live])
            idx = torch.tensor(live, device=self.model.device)
            new.lengths[idx], new.tokens[idx] = old.lengths[idx], old.tokens[idx]
            new.positions[:, idx] = old.positions[:, idx]
        self._step, self._active_list = new, None
        grow = new_B - B
        self.rows += [None] * grow
        self.counts += [0] * grow
        self.gens += [None] * grow
