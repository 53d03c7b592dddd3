"""Continuous batching for the server: KV-cache slots that requests join and leave between decode steps.

This is `ernie_vl.engine.Engine._generate_continuous` turned inside out, so that requests arriving *while* others
generate can join: the engine's building blocks are used as they are — `ernie_vl.engine.collate` left-pads the
admitted requests, one prefill with `logits_to_keep=1` into a temporary cache, `KVCache.load_rows` moves each
sequence into its slot from position 0, `model.decode_slots` runs one step over all slots with per-slot lengths and
positions, `ernie_vl.sampling.sample_next` picks tokens. A finished row frees its slot at once. For greedy settings the
tokens equal `Engine.generate` on the same `Prepared` requests (tests/test_serve_units.py pins this).

What the server adds: every row carries its own settings (`RowParams`: max_new_tokens, sampling, seed — concurrent
requests ask for different things) and a callback that receives each token as soon as it exists and may stop the
row (a stop string matched, the client went away). Sampling rows use their own `torch.Generator` seeded with the
request's seed, so a seeded request gives the same answer whatever else shares its batch.

The cache grows on demand (more slots, longer capacity; live rows are copied over) up to `max_slots`, and is released
when the last row leaves, so an idle replica holds no KV memory and a lone request decodes a one-slot batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ernie_vl.engine import Prepared, collate
from ernie_vl.sampling import sample_next


@dataclass
class RowParams:
    """Generation settings of one request."""

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


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class SlotDecoder:
    """Slots of one replica's continuous batch. Not thread-safe: one decode thread drives it."""

    def __init__(self, model, eos_token_ids: list[int], pad_token_id: int = 0, max_slots: int = 32,
                 max_batch_tokens: int = 16384):
        self.model = model
        self.eos = set(int(e) for e in eos_token_ids)
        self.pad_token_id = pad_token_id
        self.max_slots = max_slots
        self.max_batch_tokens = max_batch_tokens
        self.rows: list[Row | None] = []
        self.cache = None
        self._release()

    # ------------------------------------------------------------------------------------------- admission
    @property
    def active(self) -> list[int]:
        return [b for b, r in enumerate(self.rows) if r is not None]

    @staticmethod
    def need(row: Row) -> int:
        """Cache positions a row may use: its prompt plus its token budget."""
        return row.prepared.num_prompt_tokens + row.params.max_new_tokens

    def fits(self, admitted: list[Row], row: Row) -> bool:
        """Whether `row` can join now, with `admitted` already chosen: a free slot, and padded work — longest need x
        rows, the budget `Engine` applies when it admits requests — within `max_batch_tokens`. An idle decoder takes any first row."""
        live = [r for r in self.rows if r is not None] + admitted
        if not live:
            return True
        if len(live) + 1 > self.max_slots:
            return False
        longest = max([self.need(r) for r in live] + [self.need(row)])
        return longest * (len(live) + 1) <= self.max_batch_tokens

    @torch.inference_mode()
    def admit(self, rows: list[Row]) -> None:
        """Prefill `rows` together (one left-padded batch) into free slots; their first tokens go to the callbacks."""
        if not rows:
            return
        live = self.active
        self._ensure(len(live) + len(rows), max(self.need(r) for r in rows))
        free = [b for b, r in enumerate(self.rows) if r is None][: len(rows)]
        model = self.model
        batch = [r.prepared for r in rows]
        inputs = collate(batch, self.pad_token_id)
        S = inputs["input_ids"].shape[1]
        tmp = model.new_cache(len(batch), S)
        out = model(**inputs, cache=tmp, logits_to_keep=1)
        spans = [(S - p.num_prompt_tokens, S) for p in batch]
        self.cache.load_rows(free, tmp, list(range(len(batch))), spans)
        for j, (slot, row) in enumerate(zip(free, rows)):
            self.rows[slot] = row
            self.counts[slot] = 0
            self.gens[slot] = (torch.Generator(device=model.device).manual_seed(row.params.seed)
                               if row.params.do_sample else None)
            self.lengths[slot] = row.prepared.num_prompt_tokens
            self.next_pos[:, slot] = out.position_ids[:, j, -1:] + 1
        self._record(free, out.logits[:, -1])

    # ------------------------------------------------------------------------------------------- decoding
    @torch.inference_mode()
    def step(self) -> None:
        """One decode step over the live slots."""
        active = self.active
        if not active:
            return
        logits = self.model.decode_slots(self.last, self.next_pos, self.cache, self.lengths)
        self.lengths[active] += 1
        self.next_pos[:, active] += 1
        self._record(active, logits[active])

    def drop(self, slot: int) -> None:
        """Free a slot (its row was cancelled)."""
        self.rows[slot] = None
        self.lengths[slot] = 0
        if not self.active:
            self._release()

    def reset(self) -> list[Row]:
        """Forget every row (after a failure); returns the rows that were live."""
        live = [r for r in self.rows if r is not None]
        self._release()
        return live

    def _record(self, slots: list[int], logits_BV: torch.Tensor) -> None:
        nxt = sample_next(logits_BV)  # greedy for every row (what sample_next does with do_sample=False)
        for j, slot in enumerate(slots):
            p = self.rows[slot].params
            if p.do_sample and p.temperature > 0:
                nxt[j] = sample_next(logits_BV[j:j + 1], True, p.temperature, p.top_k, p.top_p, self.gens[slot])[0]
        self.last[slots] = nxt.to(self.last.device)
        for slot, tok in zip(slots, nxt.tolist()):
            row = self.rows[slot]
            self.counts[slot] += 1
            finish = "stop" if tok in self.eos else ("length" if self.counts[slot] >= row.params.max_new_tokens
                                                     else None)
            halted = row.on_token(tok, finish)
            if finish is not None or halted:
                self.rows[slot] = None
                self.lengths[slot] = 0
        if not self.active:
            self._release()

    # ------------------------------------------------------------------------------------------- cache
    def _release(self) -> None:
        self.rows, self.cache = [], None
        self.counts, self.gens = [], []
        dev = getattr(self.model, "device", "cpu")
        self.lengths = torch.zeros(0, dtype=torch.long, device=dev)
        self.next_pos = torch.zeros(3, 0, 1, dtype=torch.long, device=dev)
        self.last = torch.zeros(0, dtype=torch.long, device=dev)

    def _ensure(self, n_slots: int, capacity: int) -> None:
        """Make room for `n_slots` rows and sequences of `capacity` tokens, copying live rows into a bigger cache."""
        B = len(self.rows)
        old_cap = self.cache.capacity if self.cache is not None else 0
        if n_slots <= B and capacity <= old_cap:
            return
        new_B = max(B, min(self.max_slots, _pow2(n_slots)))
        new_cap = max(old_cap, -(-capacity // 64) * 64)
        cache = self.model.new_cache(new_B, new_cap)
        live = self.active
        if live:
            cache.load_rows(live, self.cache, live, [(0, int(self.lengths[b])) for b in live])
        self.cache = cache
        grow = new_B - B
        dev = self.lengths.device
        self.rows += [None] * grow
        self.counts += [0] * grow
        self.gens += [None] * grow
        self.lengths = torch.cat([self.lengths, torch.zeros(grow, dtype=torch.long, device=dev)])
        self.next_pos = torch.cat([self.next_pos, torch.zeros(3, grow, 1, dtype=torch.long, device=dev)], dim=1)
        self.last = torch.cat([self.last, torch.zeros(grow, dtype=torch.long, device=dev)])
