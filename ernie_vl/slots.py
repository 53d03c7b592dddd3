"""Continuous batching over KV-cache slots: the one decode loop of the batch engine, the server and the
expert-parallel ranks.

Rows (requests) join between decode steps. `ContinuousBatch.admit(rows)` prefills them together — one left-padded
`inputs.ModelBatch`, `logits_to_keep=1`, into a temporary cache — and moves each sequence into a free slot from
position 0 (`KVCache.load_rows`); `step()` runs one decode step over every slot (`decode_step.DecodeStep`: eager,
fixed-shape, compiled or replayed from a CUDA graph) and hands each live row its next token. A row that finishes
(EOS, its token budget — `max_new_tokens`, or `max_answer_tokens` after a reasoning row's `</think>` — or its
callback asks to stop) frees its slot at once, so short answers do not wait for long ones.

Every row carries its own `GenerationSettings` and a callback that receives each token as soon as it exists. A
sampling row uses its own `torch.Generator` seeded with its seed, so a seeded row gives the same tokens whatever else
shares its batch; greedy rows give exactly the tokens of `model.generate` on the request alone.

Lockstep (`group` set: the ranks of an expert-parallel replica): every rank runs the same collectives in the same
order whatever its rows hold — a rank with nothing to admit takes part in the prefill's exchanges
(`expert_parallel.idle_prefill`), and `step()` returns False only once no rank has a live row. Every rank holds the
same slots and capacity (the engine agrees on them per call) and runs its decode step at every lockstep step, live
rows or not, so decode steps exchange fixed-size, padded buffers (`expert_parallel.fixed_exchange`) with no host read,
and every rank's step is compiled or captured in a CUDA graph at the same step (capture runs the exchanges too).

Slots and capacity grow on demand (`reserve`; a server's batch starts empty and, with `release_when_idle`, gives its
KV memory back when the last row leaves); the batch engine reserves exactly what a call needs and keeps it (and a
compiled or captured step) for the next call. One device->host read per step (the new tokens); lengths are tracked
on the host too, so the step itself reads nothing back. Legend: B slots, V vocabulary.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .decode_step import DecodeStep, compile_decode, resolve_decode_mode
from .generation import GenerationSettings, finish_reason
from .inputs import ModelBatch, ModelInputs
from .prefix import PrefixCache, group_by_prefix
from .sampling import TokenCounts, sample_next, token_logprobs

_BUCKET = 128  # fixed-shape steps round the cache capacity up to a multiple of this (fewer captures/compilations)


class Row(Protocol):
    """What a slot holds: the request's inputs, its settings and where its tokens go."""

    inputs: ModelInputs
    settings: GenerationSettings
    reused_prompt_tokens: int  # set by `admit` before the first token: prompt tokens taken from a shared prefix

    def on_token(self, token: int, finish: str | None) -> bool:
        """`finish` is "stop" (EOS), "length" (budget spent) or None; return True to stop the row now. A row whose
        settings ask for log-probabilities is called with `logprobs=` its `sampling.TokenLogprobs` too."""


def _bucketed(n: int, unit: int = _BUCKET) -> int:
    return -(-n // unit) * unit


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class ContinuousBatch:
    """The slots of one model's continuous batch. Not thread-safe: one thread drives it.

    `max_slots` / `max_batch_tokens`: the bounds `fits` applies for callers that admit rows as they come (the
    server). `exact`: `reserve` makes exactly the slots asked for (the batch engine: no idle slot is computed)
    instead of powers of two. `release_when_idle`: drop the cache when the last row leaves. `group`: the process
    group of an expert-parallel replica (lockstep, see the module docstring). `min_prefix`: rows admitted together
    that share at least this many prompt tokens (media included, `prefix.shared_prefix`) prefill them once (0: off);
    with a `prefix_cache`, every admitted prompt's keys and values are kept there, and a later row sharing at least
    `min_prefix` tokens with one of them continues from it (the server: multi-turn chats, repeated questions)."""

    def __init__(self, model, max_slots: int = 32, max_batch_tokens: int = 16384, decode: str = "auto",
                 exact: bool = False, release_when_idle: bool = True, group=None, min_prefix: int = 0,
                 prefix_cache: PrefixCache | None = None):
        self.model = model
        self.min_prefix = min_prefix
        self.prefix_cache = prefix_cache if min_prefix and group is None else None
        self.stats = {"prompt_tokens": 0, "prefix_tokens_reused": 0}  # prompt tokens admitted / not recomputed
        self.max_slots = max_slots
        self.max_batch_tokens = max_batch_tokens
        self.decode_mode = resolve_decode_mode(decode, model.device)
        self.exact, self.release_when_idle, self.group = exact, release_when_idle, group
        self._compiled = compile_decode() if self.decode_mode == "compile" else None
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
        return row.inputs.num_prompt_tokens + row.settings.max_new_tokens

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
    def admit(self, rows: list[Row], features: list | None = None) -> None:
        """Prefill `rows` into free slots; their first tokens go to the callbacks. `features`: per row, its
        (image features, video features) when encoded beforehand (`vision_ahead.VisionAhead`). Rows sharing a prompt
        prefix (`min_prefix`) prefill it once; the others are prefilled together as one left-padded batch. In lockstep
        every rank calls it, with or without rows. Each row's `reused_prompt_tokens` is set before its first token:
        the prompt tokens it took from a prefix computed for another row."""
        if not rows:
            if self.group is not None:
                from .expert_parallel import idle_prefill

                idle_prefill(self.model)
            return
        # never fewer slots than there are: the engine sized the batch for the call (in lockstep: the same on all ranks)
        self.reserve(max(len(self.rows), len(self.active) + len(rows)), max(self.need(r) for r in rows))
        slots = self.free[: len(rows)]
        model, st = self.model, self._step
        pad = rows[0].settings.pad_token_id
        items = [r.inputs for r in rows]
        feats = features or [None] * len(rows)
        groups = (group_by_prefix(items, self.min_prefix) if self.min_prefix and self.group is None
                  else [(0, list(range(len(rows))))])
        plain = [i for p, g in groups if not p for i in g]
        cached = {}  # rows continuing from the keys and values of an earlier prompt
        if self.prefix_cache is not None:
            for i in plain:
                p, kv = self.prefix_cache.lookup(items[i], self.min_prefix)
                if kv is not None:
                    cached[i] = (p, kv)
            plain = [i for i in plain if i not in cached]
        order = plain + [i for p, g in groups if p for i in g] + list(cached)  # the order the logits come in
        logits = []
        if plain:  # one left-padded batch
            batch = ModelBatch.collate([items[i] for i in plain], pad)
            S = batch.shape[1]
            tmp = model.new_cache(len(plain), S)
            out = model.prefill(batch, tmp, logits_to_keep=1, **_joined([feats[i] for i in plain]))
            st.cache.load_rows([slots[i] for i in plain], tmp, list(range(len(plain))), [(S - n, S) for n in batch.lengths])
            self._place([slots[i] for i in plain], batch.next_positions)
            logits.append(out.logits[:, -1])
        reused = [0] * len(rows)
        shared = []  # (prefix length, rows, a one-row cache holding the prefix or None: the first row computes it)
        for p, g in groups:
            if p:
                stored = self.prefix_cache.lookup(items[g[0]], p) if self.prefix_cache is not None else (0, None)
                shared.append((p, g, stored[1] if stored[0] >= p else None))  # an earlier prompt holds the prefix
        shared += [(p, [i], kv) for i, (p, kv) in cached.items()]
        if shared:
            logits.append(self._prefill_shared(shared, items, feats, slots, pad))
            for p, g, pre in shared:
                for i in (g if pre is not None else g[1:]):
                    reused[i] = p
        self.stats["prompt_tokens"] += sum(x.num_prompt_tokens for x in items)
        slots = [slots[i] for i in order]
        for row, n in zip(rows, reused):
            row.reused_prompt_tokens = n
        rows = [rows[i] for i in order]
        idx = torch.tensor(slots, device=model.device)
        st.lengths[idx] = torch.tensor([r.inputs.num_prompt_tokens for r in rows], device=model.device)
        for slot, row, n in zip(slots, rows, [r.inputs.num_prompt_tokens for r in rows]):
            self.rows[slot] = row
            self.counts[slot] = 0
            self.lens[slot] = n
            self.gens[slot] = (torch.Generator(device=model.device).manual_seed(row.settings.seed)
                               if row.settings.samples else None)
            self.penalties[slot] = None  # made from the first logits (`_record`)
            self.answer_at[slot] = None
        if self.prefix_cache is not None:
            for slot, row in zip(slots, rows):
                n = row.inputs.num_prompt_tokens
                kv = model.new_cache(1, n)
                kv.load_rows([0], st.cache, [slot], [(0, n)])
                self.prefix_cache.store(row.inputs, kv)
        self._record(slots, idx, torch.cat(logits))

    def _place(self, slots: list[int], next_positions_3B: torch.Tensor) -> None:
        self._step.positions[:, torch.tensor(slots, device=self.model.device)] = (
            next_positions_3B.to(self.model.device)[:, :, None])

    def _prefill_shared(self, shared: list, items: list[ModelInputs], feats: list, slots: list[int], pad: int
                        ) -> torch.Tensor:
        """Prefill groups of rows that share a prompt prefix in at most two forward passes, whatever the number of
        groups (on a GPU a small forward costs its kernel launches, not its arithmetic). `shared`: per group (prefix
        length p, row indices, `pre`: a one-row cache already holding the p tokens, or None). First the prefixes held
        nowhere, once per group, as one left-padded batch; then every row's own suffix as one left-padded batch
        continuing from a copy of its group's prefix: prefixes right-aligned at the longest one's end, the positions
        before them masked. Positions are those of the full sequences. Each sequence moves into its slot.
        Next-token logits [rows, V], rows in the groups' order."""
        model = self.model
        P = max(p for p, _, _ in shared)
        heads = [(p, g) for p, g, pre in shared if pre is None]
        if heads:
            batch = ModelBatch.collate([items[g[0]].slice(0, p) for p, g in heads], pad)
            computed = model.new_cache(len(heads), batch.shape[1])
            model.prefill(batch, computed, logits_to_keep=1,
                          **_joined([_part(feats[g[0]], items[g[0]], 0, p) for p, g in heads]))
        rows = [(i, p) for p, g, _ in shared for i in g]
        tails = ModelBatch.collate([items[i].slice(p, items[i].num_prompt_tokens) for i, p in rows], pad)
        S = tails.shape[1]
        tmp = model.new_cache(len(rows), P + S)
        k = h = 0
        for p, g, pre in shared:  # each row's prefix into [P - p, P) of its row
            src, src_row, end = (pre, 0, p) if pre is not None else (computed, h, computed.length)
            h += pre is None
            for _ in g:
                tmp.load_rows([k], src, [src_row], [(end - p, end)], at=P - p)
                k += 1
        tmp.length = P
        prefix_mask = torch.arange(P)[None, :] >= torch.tensor([P - p for _, p in rows])[:, None]
        out = model.prefill(tails, tmp, logits_to_keep=1, prefix_mask=prefix_mask,
                            **_joined([_part(feats[i], items[i], p, items[i].num_prompt_tokens) for i, p in rows]))
        cache = self._step.cache
        for k, ((i, p), m) in enumerate(zip(rows, tails.lengths)):
            cache.load_rows([slots[i]], tmp, [k], [(P - p, P)])
            cache.load_rows([slots[i]], tmp, [k], [(P + S - m, P + S)], at=p)
        self._place([slots[i] for i, _ in rows], tails.next_positions)
        self.stats["prefix_tokens_reused"] += sum(p * (len(g) if pre is not None else len(g) - 1)
                                                  for p, g, pre in shared)
        return out.logits[:, -1]

    # ------------------------------------------------------------------------------------------- decoding
    @torch.inference_mode()
    def step(self) -> bool:
        """One decode step over the live slots. Returns whether a step ran; in lockstep, whether any rank still has
        live rows (every rank calls `step` until it returns False)."""
        active = self.active
        if self.group is not None:
            from .expert_parallel import any_rank, fixed_exchange

            if not any_rank(bool(active), self.model.device, self.group):
                return False
            with fixed_exchange(self.model, len(self.rows)):  # every rank holds the same number of slots
                if active:
                    self._decode(active)
                else:  # nothing live here: the same step (and exchanges) over the idle slots, results unused
                    self._step(1)
            return True
        if not active:
            return False
        self._decode(active)
        return True

    def _decode(self, active: list[int]) -> None:
        if active != self._active_list:  # the slot set changed: a new device index (no host->device copy per step)
            self._active_list, self._active_idx = active, torch.tensor(active, device=self.model.device)
        st, rows = self._step, self._active_idx
        logits = st(max(self.lens[b] for b in active) + 1)
        st.lengths[rows] += 1
        st.positions[:, rows] += 1
        for b in active:
            self.lens[b] += 1
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
        self.penalties[slot] = None
        self.answer_at[slot] = None
        self.lens[slot] = 0
        self._step.lengths[slot] = 0

    def _record(self, slots: list[int], idx: torch.Tensor, logits_BV: torch.Tensor) -> None:
        """Pick the next token of `slots` (device index `idx`), with one device->host read, and hand them out.
        Rows with penalties, sampling or log-probabilities take their own path here (the plain greedy rows add no
        work and no host read)."""
        nxt = sample_next(logits_BV)  # greedy for every row, then the rows that ask for more, one by one
        logprobs = {}
        for j, slot in enumerate(slots):
            s = self.rows[slot].settings
            if s.penalized or s.samples:
                row_logits = logits_BV[j:j + 1]
                if s.penalized:
                    if self.penalties[slot] is None:
                        self.penalties[slot] = TokenCounts(self.rows[slot].inputs.input_ids, row_logits.shape[-1],
                                                           row_logits.device)
                    row_logits = self.penalties[slot].penalize(row_logits, s)
                nxt[j] = sample_next(row_logits, s.samples, s.temperature, s.top_k, s.top_p, self.gens[slot])[0]
                if s.penalized:
                    self.penalties[slot].add(nxt[j:j + 1])
            if s.logprobs is not None:
                logprobs[slot] = token_logprobs(logits_BV[j:j + 1], nxt[j:j + 1], s.logprobs)[0]
        self._step.tokens[idx] = nxt
        for slot, tok in zip(slots, nxt.tolist()):
            row = self.rows[slot]
            self.counts[slot] += 1
            finish = finish_reason(tok, self.counts[slot], row.settings, self._answer_tokens(slot, tok))
            if slot in logprobs:  # only rows that asked for log-probabilities take the keyword
                halted = row.on_token(tok, finish, logprobs=logprobs[slot])
            else:
                halted = row.on_token(tok, finish)
            if finish is not None or halted:
                self._free_slot(slot)
        if not self.active and self.release_when_idle:
            self._release()

    def _answer_tokens(self, slot: int, tok: int) -> int | None:
        """Tokens a row with an answer budget has generated after its `</think>` (None before it or without one)."""
        s = self.rows[slot].settings
        if s.max_answer_tokens is None:
            return None
        if self.answer_at[slot] is None and tok == s.think_end_token_id:
            self.answer_at[slot] = self.counts[slot]
        return None if self.answer_at[slot] is None else self.counts[slot] - self.answer_at[slot]

    # ------------------------------------------------------------------------------------------- cache
    def _release(self) -> None:
        self.rows: list[Row | None] = []
        self.counts: list[int] = []
        self.lens: list[int] = []  # tokens cached per slot, as the device's `lengths` holds them
        self.gens: list[torch.Generator | None] = []
        self.penalties: list[TokenCounts | None] = []  # per slot, for rows with penalties
        self.answer_at: list[int | None] = []  # per slot, the token count at `</think>` (rows with an answer budget)
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
            new.cache.load_rows(live, old.cache, live, [(0, self.lens[b]) for b in live])
            idx = torch.tensor(live, device=self.model.device)
            new.lengths[idx], new.tokens[idx] = old.lengths[idx], old.tokens[idx]
            new.positions[:, idx] = old.positions[:, idx]
        self._step, self._active_list = new, None
        grow = new_B - B
        self.rows += [None] * grow
        self.counts += [0] * grow
        self.lens += [0] * grow
        self.gens += [None] * grow
        self.penalties += [None] * grow
        self.answer_at += [None] * grow


def _joined(per_row: list) -> dict:
    """Per-row (image features, video features) -> the prefill's `image_features` / `video_features` (row order)."""
    out = {}
    for k, name in enumerate(("image_features", "video_features")):
        got = [f[k] for f in per_row if f is not None and f[k] is not None]
        if got:
            out[name] = torch.cat(got)
    return out


def _part(feats, x: ModelInputs, a: int, b: int):
    """Of a row's (image features, video features), those of the media inside its tokens [a, b)."""
    if feats is None:
        return None
    out = []
    for k, (spans, batch) in enumerate(((x.image_spans, x.images), (x.video_spans, x.videos))):
        keep = [i for i, (s, e) in enumerate(spans) if a <= s and e <= b]
        if feats[k] is None or batch is None or not keep:
            out.append(None)
            continue
        start = sum(batch.tokens[: keep[0]])
        out.append(feats[k][start: start + sum(batch.tokens[i] for i in keep)])
    return tuple(out)
