"""The generation engine used by the batch pipeline and the server.

A `Prepared` request is what the processor produced for one conversation (CPU tensors, compact: token ids, pixel
rows, grids). The engine packs prepared requests into left-padded batches, generates, and returns per-request new
token ids with counts and timings. Batching is by work: a batch is closed when its padded token count (prompt +
new tokens) would exceed `max_batch_tokens` or it holds `max_batch_size` requests.

Continuous batching: the KV cache has `max_batch_size` slots; a sequence that finishes (EOS or its token budget)
frees its slot at once and the next waiting requests are prefilled into free slots while the others keep decoding,
so short answers do not wait for long ones. The decode step (`DecodeStep`) works on persistent slot tensors and can
run with fixed shapes: compiled with torch.compile, or captured once in a CUDA graph and replayed (the default on
CUDA), since it has no host synchronisation and no data-dependent Python branch.

Expert-parallel ranks (`group` set) instead run one left-padded batch per call in lockstep with the other ranks.
"""

from __future__ import annotations

import json
import os
import time
import warnings
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


DECODE_MODES = ("auto", "eager", "static", "compile", "graph")
_BUCKET = 128  # fixed-shape steps round the cache capacity up to a multiple of this (fewer captures/compilations)


def resolve_decode_mode(mode: str, device: torch.device) -> str:
    if mode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {mode!r}; choose one of {DECODE_MODES}")
    if mode == "auto":
        return "graph" if device.type == "cuda" else "eager"
    if mode == "graph" and device.type != "cuda":
        raise ValueError(f"decode mode 'graph' captures a CUDA graph and needs a CUDA device, not {device}")
    return mode


class DecodeStep:
    """The decode step of a continuous batch over `batch` KV-cache slots of `capacity` tokens.

    Its inputs are persistent tensors that the engine updates in place between steps: `tokens` [B] (last token per
    slot), `positions` [3, B, 1] (its rotary position) and `lengths` [B] (tokens cached per slot). Modes:
    * "eager": keys cut at the longest slot each step (the least work; the default on CPU);
    * "static": fixed shapes (keys up to the capacity, masked per slot) — exactly what the next two run;
    * "compile": the fixed-shape step through `torch.compile` (fused elementwise kernels);
    * "graph": the fixed-shape step captured once in a CUDA graph and replayed (no per-kernel launch cost).
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

    def fits(self, batch: int, capacity: int) -> bool:
        if batch != self.batch or capacity > self.capacity:
            return False
        return self.mode == "eager" or self.capacity == _bucketed(capacity)

    def _run(self) -> torch.Tensor:
        attend = None if self.mode == "eager" else self.capacity
        return self._fn(self.tokens, self.positions, self.cache, self.lengths, attend_len=attend)

    def __call__(self) -> torch.Tensor:
        """Next-token logits [B, V] for every slot (rows of free slots are meaningless)."""
        if self.mode == "graph" and self._graph is None:
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


class _VisionAhead:
    """Vision features of requests encoded before their prefill: the engine encodes the requests it will admit next
    while the current batch decodes. On CUDA the encoding runs on a side stream, so the vision tower's matmuls
    overlap the decode steps' weight reads; elsewhere it is the same work done earlier (no overlap)."""

    def __init__(self, model, requests: list[Prepared]):
        self.model, self.requests = model, requests
        self.feats: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.stream = torch.cuda.Stream(model.device) if model.device.type == "cuda" else None

    def _tokens(self, grid: torch.Tensor | None, video: bool) -> int:
        if grid is None:
            return 0
        v = self.model.config.vision
        per = v.spatial_merge_size**2 * (v.temporal_merge_size if video else 1)
        return int((grid.prod(-1) // per).sum())

    def _encode(self, todo: list[int]) -> None:
        reqs = [self.requests[i] for i in todo]
        parts = {}
        for key, grid_key, encode, video in (("pixel_values", "image_grid_thw", self.model.encode_images, False),
                                             ("pixel_values_videos", "video_grid_thw", self.model.encode_videos, True)):
            have = [r for r in reqs if getattr(r, key) is not None]
            if not have:
                parts[key] = [None] * len(reqs)
                continue
            feats = encode(torch.cat([getattr(r, key) for r in have]), torch.cat([getattr(r, grid_key) for r in have]))
            it = iter(feats.split([self._tokens(getattr(r, grid_key), video) for r in have]))
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


def _bucketed(n: int) -> int:
    return -(-n // _BUCKET) * _BUCKET


class Engine:
    def __init__(
        self, model, pad_token_id: int = 0, max_batch_size: int = 32, max_batch_tokens: int = 65536, group=None,
        decode: str = "auto", vision_ahead: bool | None = None,
    ):
        """`group`: the process group of an expert-parallel replica (see `expert_parallel`); every rank then calls
        `generate` once per gang step, possibly with no requests, and the ranks advance in lockstep.
        `decode`: how the continuous batch's decode step runs (see `DecodeStep`); "auto" = $ERNIE_VL_DECODE if set,
        else "graph" on CUDA and "eager" on CPU. `vision_ahead`: encode the images/videos of the next requests while the current batch
        decodes (see `_VisionAhead`); default: on CUDA, where it overlaps."""
        self.model = model
        self.group = group
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        if decode == "auto":
            decode = os.environ.get("ERNIE_VL_DECODE", "auto")
        self.decode_mode = resolve_decode_mode(decode, model.device)
        self.vision_ahead = model.device.type == "cuda" if vision_ahead is None else vision_ahead
        self._step: DecodeStep | None = None  # kept between calls: its cache, compiled code or captured graph
        self._compiled = torch.compile(model.decode_slots, dynamic=False) if self.decode_mode == "compile" else None
        self.stats = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0}  # accumulated over continuous calls

    def _decode_step(self, batch: int, capacity: int) -> DecodeStep:
        if self._step is None or not self._step.fits(batch, capacity):
            self._step = None  # free the old cache (and graph) before allocating the new one
            cap = capacity if self.decode_mode == "eager" else _bucketed(capacity)
            self._step = DecodeStep(self.model, batch, cap, self.decode_mode, self._compiled)
        return self._step

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
        step = self._decode_step(B, max(r.num_prompt_tokens for r in requests) + s.max_new_tokens)
        cache, lengths, next_pos, last = step.cache, step.lengths, step.positions, step.tokens
        lengths.zero_()  # slots left over from an earlier call
        gen = torch.Generator(device=dev).manual_seed(s.seed) if s.do_sample else None
        waiting = sorted(range(n), key=lambda i: -requests[i].num_prompt_tokens)[::-1]  # pop() = longest first
        slot_req = [-1] * B
        tokens: dict[int, list[int]] = {}
        started: dict[int, float] = {}
        ahead = _VisionAhead(model, requests) if self.vision_ahead else None
        active_list, rows = None, None

        def finish(slot: int, reason: str) -> None:
            i = slot_req[slot]
            results[i] = Generated(tokens[i], reason, requests[i].num_prompt_tokens, time.perf_counter() - started[i])
            slot_req[slot] = -1

        eos_ids = set(s.eos_token_id or [])

        def record(slots: list[int], rows: torch.Tensor, logits: torch.Tensor) -> None:
            """Sample the next token of `slots` (whose device index tensor is `rows`); one device->host read."""
            nxt = sample_next(logits, s.do_sample, s.temperature, s.top_k, s.top_p, gen)
            last[rows] = nxt
            for slot, tok in zip(slots, nxt.tolist()):
                i = slot_req[slot]
                tokens[i].append(tok)
                if tok in eos_ids:
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
                t0 = time.perf_counter()
                feats = ahead.take(admit) if ahead is not None else {}
                self._prefill_into(admit, free[: len(admit)], requests, cache, lengths, next_pos, slot_req,
                                   tokens, started, record, feats)
                self.stats["prefill_s"] += time.perf_counter() - t0  # record() read the tokens: work is done
                if ahead is not None and waiting:
                    ahead.launch(waiting[::-1][:B])  # the next to be admitted; encoded while these decode
            active = [b for b in range(B) if slot_req[b] >= 0]
            if not active:
                continue
            if active != active_list:  # the slot set changed: a new device index (no host->device copy per step)
                active_list, rows = active, torch.tensor(active, device=dev)
            t0 = time.perf_counter()
            logits = step()
            lengths[rows] += 1
            next_pos[:, rows] += 1
            record(active, rows, logits[rows])
            self.stats["decode_s"] += time.perf_counter() - t0
            self.stats["decode_steps"] += 1
        return results  # type: ignore[return-value]

    def _prefill_into(self, admit, slots, requests, cache, lengths, next_pos, slot_req, tokens, started, record, feats):
        model = self.model
        now = time.perf_counter()
        batch = [requests[i] for i in admit]
        inputs = collate(batch, self.pad_token_id)
        S = inputs["input_ids"].shape[1]
        tmp = model.new_cache(len(batch), S)
        out = model(**inputs, **feats, cache=tmp, logits_to_keep=1)
        spans = [(S - r.num_prompt_tokens, S) for r in batch]
        cache.load_rows(slots, tmp, list(range(len(batch))), spans)
        for j, (slot, i) in enumerate(zip(slots, admit)):
            slot_req[slot] = i
            tokens[i] = []
            started[i] = now
            lengths[slot] = requests[i].num_prompt_tokens
            next_pos[:, slot] = out.position_ids[:, j, -1:] + 1
        record(slots, torch.tensor(slots, device=model.device), out.logits[:, -1])

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
