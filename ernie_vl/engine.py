"""The generation engine of the batch pipeline (the server drives the same continuous batch, `slots`, itself).

A `Prepared` request is what the processor produced for one conversation (CPU tensors, compact: token ids, pixel
rows, grids). The engine generates for a list of them and returns per-request new token ids with finish reasons and
latencies. Prefills are by work: waiting requests (longest prompt first) are prefilled together as one left-padded
batch while free slots remain and the padded prompt tokens stay within `max_batch_tokens`.

Continuous batching (`slots.ContinuousBatch`, the same loop the server drives): the KV cache has `max_batch_size`
slots; a sequence that finishes (EOS or its token budget) frees its slot at once and the next waiting requests are
prefilled into free slots while the others keep decoding, so short answers do not wait for long ones. The decode step
runs eager on CPU and is captured once in a CUDA graph and replayed on CUDA (`slots.DecodeStep`).

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
from .slots import (
    DECODE_MODES,
    ContinuousBatch,
    Prepared,
    RowParams,
    VisionAhead,
    collate,
    resolve_decode_mode,
)


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

__all__ = ["DECODE_MODES", "Engine", "Generated", "GenerationSettings", "Prepared", "collate", "drain",
           "read_eos_ids", "resolve_decode_mode"]


def drain(gen):
    """Run a generator to its end; its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


class _Request:
    """A row of the engine's continuous batch: collects its tokens into `results[i]` when it finishes."""

    def __init__(self, i: int, prepared: Prepared, params: RowParams, results: list):
        self.i, self.prepared, self.params, self.results = i, prepared, params, results
        self.tokens: list[int] = []
        self.t0 = time.perf_counter()

    def on_token(self, token: int, finish: str | None) -> bool:
        self.tokens.append(token)
        if finish is not None:
            self.results[self.i] = Generated(self.tokens, finish, self.prepared.num_prompt_tokens,
                                             time.perf_counter() - self.t0)
        return False


def read_eos_ids(model_path, model=None) -> list[int]:
    """EOS ids from the checkpoint's generation_config.json (else the model config's `eos_token_id`)."""
    gen = Path(model_path) / "generation_config.json"
    eos = json.loads(gen.read_text()).get("eos_token_id") if gen.is_file() else None
    if eos is None and model is not None:
        eos = getattr(model.config.text, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


class Engine:
    def __init__(
        self, model, pad_token_id: int = 0, max_batch_size: int = 32, max_batch_tokens: int = 65536, group=None,
        decode: str = "auto", vision_ahead: bool | None = None,
    ):
        """`group`: the process group of an expert-parallel replica (see `expert_parallel`); every rank then calls
        `generate` once per gang step, possibly with no requests, and the ranks advance in lockstep.
        `decode`: how the continuous batch's decode step runs (see `slots.DecodeStep`); "auto" = $ERNIE_VL_DECODE
        if set, else "graph" on CUDA and "eager" on CPU. `vision_ahead`: encode the images/videos of the next
        requests while the current batch decodes (see `slots.VisionAhead`); default: on CUDA, where it overlaps."""
        self.model = model
        self.group = group
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.decode_mode = resolve_decode_mode(decode, model.device)
        self.vision_ahead = model.device.type == "cuda" if vision_ahead is None else vision_ahead
        self._batch: ContinuousBatch | None = None  # kept between calls: its cache and compiled or captured step
        self.stats = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0}  # accumulated over continuous calls

    @torch.inference_mode()
    def generate(self, requests: list[Prepared], settings: GenerationSettings) -> list[Generated]:
        if self.group is not None:  # one batch per call, so that all ranks run the same number of prefills
            return self._generate_batch(requests, settings)
        return self._generate_continuous(requests, settings)

    @torch.inference_mode()  # on a generator function torch re-enters the mode at every resumption only
    def stream_batch(self, requests: list[Prepared], settings: GenerationSettings):
        """The lockstep batch of an expert-parallel rank as it runs: yields `[(request index, token), ...]` after
        every step that produced tokens (the live rows' new tokens); returns the `Generated` list (`drain`)."""
        return (yield from self._iter_batch(requests, settings))

    def _generate_continuous(self, requests: list[Prepared], s: GenerationSettings) -> list[Generated]:
        """Continuous batching over `max_batch_size` cache slots (`slots.ContinuousBatch`): a finished sequence frees
        its slot at once and the next waiting requests are prefilled (together, as one padded batch) into the free
        slots. Admission: longest prompts first, as many as free slots allow within `max_batch_tokens` of padded
        prompt tokens per prefill."""
        n = len(requests)
        results: list[Generated | None] = [None] * n
        if n == 0 or s.max_new_tokens <= 0:
            return [Generated([], "length", r.num_prompt_tokens, 0.0) for r in requests]
        if self._batch is None:
            self._batch = ContinuousBatch(self.model, [], self.pad_token_id, max_slots=self.max_batch_size,
                                          decode=self.decode_mode, exact=True, release_when_idle=False)
        batch = self._batch
        batch.eos = set(s.eos_token_id or [])
        batch.reserve(min(self.max_batch_size, n), max(r.num_prompt_tokens for r in requests) + s.max_new_tokens)
        params = RowParams(s.max_new_tokens, s.do_sample, s.temperature, s.top_p, s.top_k, s.seed)
        waiting = sorted(range(n), key=lambda i: -requests[i].num_prompt_tokens)[::-1]  # pop() = longest first
        ahead = VisionAhead(self.model, requests) if self.vision_ahead else None
        while waiting or batch.active:
            free = len(batch.free)
            if free and waiting:
                admit, budget = [], self.max_batch_tokens
                while waiting and len(admit) < free:
                    cost = requests[waiting[-1]].num_prompt_tokens * (len(admit) + 1)
                    if admit and cost > budget:
                        break
                    admit.append(waiting.pop())
                t0 = time.perf_counter()
                features = ahead.take(admit) if ahead is not None else None
                batch.admit([_Request(i, requests[i], params, results) for i in admit], features)
                self.stats["prefill_s"] += time.perf_counter() - t0  # the first tokens were read: work is done
                if ahead is not None and waiting:
                    ahead.launch(waiting[::-1][: self.max_batch_size])  # the next to be admitted, while these decode
            if batch.active:
                t0 = time.perf_counter()
                batch.step()
                self.stats["decode_s"] += time.perf_counter() - t0
                self.stats["decode_steps"] += 1
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch: list[Prepared], s: GenerationSettings) -> list[Generated]:
        return drain(self._iter_batch(batch, s))

    def _iter_batch(self, batch: list[Prepared], s: GenerationSettings):
        model = self.model
        if not batch:  # an expert-parallel rank without requests still takes part in every exchange
            if self.group is not None:
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
        eos = set(s.eos_token_id or [])
        alive = list(range(B))  # original row of each live batch row
        tokens: list[list[int]] = [[] for _ in range(B)]
        finish = ["length"] * B
        latency = [0.0] * B
        step, active, end = 0, s.max_new_tokens > 0, 0.0
        while True:
            if active:
                nxt = sample_next(logits, s.do_sample, s.temperature, s.top_k, s.top_p, gen)
                nxt_l = nxt.tolist()  # the step's one device->host read
                stop_l = [tok in eos for tok in nxt_l]
                now = time.perf_counter() - t0
                for r, tok, st in zip(alive, nxt_l, stop_l):
                    tokens[r].append(tok)
                    if st:
                        finish[r], latency[r] = "stop", now
                yield list(zip(alive, nxt_l))
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
