"""The generation engine used by the batch pipeline and the server.

A `Prepared` request is what the processor produced for one conversation (CPU tensors, compact: token ids, pixel
rows, grids). The engine packs prepared requests into left-padded batches, generates, and returns per-request new
token ids with counts and timings. Batching is by work: a batch is closed when its padded token count (prompt +
new tokens) would exceed `max_batch_tokens` or it holds `max_batch_size` requests.

Continuous batching: the KV cache has `max_batch_size` slots; a sequence that finishes (EOS or its token budget)
frees its slot at once and the next waiting requests are prefilled into free slots while the others keep decoding,
so short answers do not wait for long ones. A decode step (`model.decode_slots`) has fixed shapes per slot count.

Expert-parallel ranks (`group` set) instead run one left-padded batch per call in lockstep with the other ranks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .kv_cache import KVCache
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


@dataclass
class GenerationSettings:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    eos_token_id: list[int] = field(default_factory=list)
    seed: int = 0


@dataclass
class Generated:
    tokens: list[int]  # new tokens, EOS included if produced
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    latency_s: float


def read_eos_ids(model_path, model=None) -> list[int]:
    """EOS ids from the checkpoint's generation_config.json (else the model config's `eos_token_id`)."""
    gen = Path(model_path) / "generation_config.json"
    eos = json.loads(gen.read_text()).get("eos_token_id") if gen.is_file() else None
    if eos is None and model is not None:
        eos = getattr(model.config.text, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


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


class Engine:
    def __init__(
        self, model, pad_token_id: int = 0, max_batch_size: int = 32, max_batch_tokens: int = 65536, group=None
    ):
        """`group`: the process group of an expert-parallel replica (see `expert_parallel`); every rank then calls
        `generate` once per gang step, possibly with no requests, and the ranks advance in lockstep."""
        self.model = model
        self.group = group
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens

    @torch.inference_mode()
    def generate(self, requests: list[Prepared], settings: GenerationSettings) -> list[Generated]:
        if self.group is not None:  # one batch per call, so that all ranks run the same number of prefills
            return self._generate_batch(requests, settings)
        return self._generate_continuous(requests, settings)

    def _generate_continuous(self, requests: list[Prepared], s: GenerationSettings) -> list[Generated]:
        """Continuous batching over `max_batch_size` cache slots: a finished sequence frees its slot at once and the
        next waiting requests are prefilled (together, as one padded batch) into the free slots."""
        model = self.model
        n = len(requests)
        results: list[Generated | None] = [None] * n
        if n == 0 or s.max_new_tokens <= 0:
            return [Generated([], "length", r.num_prompt_tokens, 0.0) for r in requests]
        dev = model.device
        B = min(self.max_batch_size, n)
        capacity = max(r.num_prompt_tokens for r in requests) + s.max_new_tokens
        cache = model.new_cache(B, capacity)
        gen = torch.Generator(device=dev).manual_seed(s.seed) if s.do_sample else None
        eos = torch.tensor(s.eos_token_id or [], dtype=torch.long, device=dev)
        waiting = sorted(range(n), key=lambda i: -requests[i].num_prompt_tokens)[::-1]  # pop() = longest first
        slot_req = [-1] * B
        lengths = torch.zeros(B, dtype=torch.long, device=dev)
        next_pos = torch.zeros(3, B, 1, dtype=torch.long, device=dev)
        last = torch.zeros(B, dtype=torch.long, device=dev)
        tokens: dict[int, list[int]] = {}
        started: dict[int, float] = {}

        def finish(slot: int, reason: str) -> None:
            i = slot_req[slot]
            results[i] = Generated(tokens[i], reason, requests[i].num_prompt_tokens, time.perf_counter() - started[i])
            slot_req[slot] = -1

        def record(slots: list[int], logits: torch.Tensor) -> None:
            nxt = sample_next(logits, s.do_sample, s.temperature, s.top_k, s.top_p, gen)
            stop = torch.isin(nxt, eos) if eos.numel() else torch.zeros_like(nxt, dtype=torch.bool)
            last[slots] = nxt
            for slot, tok, st in zip(slots, nxt.tolist(), stop.tolist()):
                i = slot_req[slot]
                tokens[i].append(tok)
                if st:
                    finish(slot, "stop")
                elif len(tokens[i]) >= s.max_new_tokens:
                    finish(slot, "length")

        while waiting or any(r >= 0 for r in slot_req):
            free = [b for b in range(B) if slot_req[b] < 0]
            if free and waiting:
                admit, budget = [], self.max_batch_tokens
                while waiting and len(admit) < len(free):
                    cost = requests[waiting[-1]].num_prompt_tokens * (len(admit) + 1)
                    if admit and cost > budget:
                        break
                    admit.append(waiting.pop())
                self._prefill_into(admit, free[: len(admit)], requests, cache, lengths, next_pos, slot_req,
                                   tokens, started, record, s)
            active = [b for b in range(B) if slot_req[b] >= 0]
            if not active:
                continue
            logits = model.decode_slots(last, next_pos, cache, lengths)
            lengths[active] += 1
            next_pos[:, active] += 1
            record(active, logits[active])
        return results  # type: ignore[return-value]

    def _prefill_into(self, admit, slots, requests, cache, lengths, next_pos, slot_req, tokens, started, record, s):
        model = self.model
        now = time.perf_counter()
        batch = [requests[i] for i in admit]
        inputs = collate(batch, self.pad_token_id)
        S = inputs["input_ids"].shape[1]
        tmp = model.new_cache(len(batch), S)
        out = model(**inputs, cache=tmp, logits_to_keep=1)
        spans = [(S - r.num_prompt_tokens, S) for r in batch]
        cache.load_rows(slots, tmp, list(range(len(batch))), spans)
        for j, (slot, i) in enumerate(zip(slots, admit)):
            slot_req[slot] = i
            tokens[i] = []
            started[i] = now
            lengths[slot] = requests[i].num_prompt_tokens
            next_pos[:, slot] = out.position_ids[:, j, -1:] + 1
        record(slots, out.logits[:, -1])

    def _generate_batch(self, batch: list[Prepared], s: GenerationSettings) -> list[Generated]:
        model = self.model
        if not batch:  # an expert-parallel rank without requests still takes part in every exchange
            if self.group is None:
                return []
            from .expert_parallel import any_rank, idle_decode, idle_prefill

            idle_prefill(model)
            while any_rank(False, model.device, self.group):
                idle_decode(model)
            return []
        t0 = time.perf_counter()
        inputs = collate(batch, self.pad_token_id)
        B, S = inputs["input_ids"].shape
        gen = torch.Generator(device=model.device).manual_seed(s.seed) if s.do_sample else None
        cache: KVCache = model.new_cache(B, S + s.max_new_tokens)
        out = model(**inputs, cache=cache, logits_to_keep=1)
        next_pos = out.position_ids[:, :, -1:] + 1
        mask = inputs["attention_mask"].to(model.device)
        logits = out.logits[:, -1]
        eos = torch.tensor(s.eos_token_id or [], dtype=torch.long, device=model.device)
        alive = list(range(B))  # original row of each live batch row
        tokens: list[list[int]] = [[] for _ in range(B)]
        finish = ["length"] * B
        latency = [0.0] * B
        step, active, end = 0, s.max_new_tokens > 0, 0.0
        while True:
            if active:
                nxt = sample_next(logits, s.do_sample, s.temperature, s.top_k, s.top_p, gen)
                stop = torch.isin(nxt, eos) if eos.numel() else torch.zeros_like(nxt, dtype=torch.bool)
                nxt_l, stop_l = nxt.tolist(), stop.tolist()
                now = time.perf_counter() - t0
                for r, tok, st in zip(alive, nxt_l, stop_l):
                    tokens[r].append(tok)
                    if st:
                        finish[r], latency[r] = "stop", now
                keep = [j for j, st in enumerate(stop_l) if not st]
                step += 1
                active = bool(keep) and step < s.max_new_tokens
                end = now
                if active and len(keep) < len(alive):  # drop finished rows: later steps only pay for live ones
                    rows = torch.tensor(keep, device=model.device)
                    cache.select_rows(rows)
                    mask, next_pos, nxt = mask[rows], next_pos[:, rows], nxt[rows]
                    alive = [alive[j] for j in keep]
            if self.group is None:
                if not active:
                    break
            else:
                from .expert_parallel import any_rank, idle_decode

                if not any_rank(active, model.device, self.group):
                    break
                if not active:
                    idle_decode(model)
                    continue
            mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=mask.dtype, device=mask.device)], dim=1)
            out = model(nxt[:, None], mask, position_ids=next_pos, cache=cache)
            next_pos = next_pos + 1
            logits = out.logits[:, -1]
        return [
            Generated(tokens[b], finish[b], batch[b].num_prompt_tokens, latency[b] if finish[b] == "stop" else end)
            for b in range(B)
        ]
