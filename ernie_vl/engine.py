"""The generation engine of the batch pipeline and of expert-parallel ranks: requests in, `Generated` out, driven
through the one continuous batch (`slots.ContinuousBatch`; the server drives that batch itself).

A request is one `inputs.ModelInputs` (made by `Processor.prepare` on a preprocessing actor). Admission is by work:
waiting requests (longest prompt first) are prefilled together as one left-padded batch while free slots remain and
the padded prompt tokens stay within `max_batch_tokens`; a sequence that finishes frees its slot at once and the next
waiting requests are prefilled into it while the others keep decoding. The decode step runs eager on CPU and is
captured once in a CUDA graph and replayed on CUDA (`decode_step.DecodeStep`); the next requests' images and videos
are encoded while the current batch decodes (`vision_ahead.VisionAhead`, default on CUDA), each distinct medium once
while it stays in the engine's feature cache (`reuse`, on by default: benchmarks ask several questions per image).

Expert-parallel ranks (`group` set) admit a call's requests in one prefill and then step in lockstep with the other
ranks (see `slots`), so every rank runs the same number of prefills and decode steps.
"""

from __future__ import annotations

import time

import torch

from .byte_lru import ByteLRU
from .generation import Generated, GenerationSettings
from .inputs import ModelInputs
from .prefix import PrefixCache, prefix_signature
from .slots import ContinuousBatch
from .vision_ahead import VisionAhead

__all__ = ["Engine", "Generated", "GenerationSettings", "ModelInputs", "drain"]


def drain(gen):
    """Run a generator to its end; its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


class _Request:
    """A row of the engine's continuous batch: collects its tokens, and the step's new tokens into `emitted`."""

    def __init__(self, i: int, inputs: ModelInputs, settings: GenerationSettings, results: list, emitted: list):
        self.i, self.inputs, self.settings, self.results, self.emitted = i, inputs, settings, results, emitted
        self.tokens: list[int] = []
        self.logprobs: list | None = [] if settings.logprobs is not None else None
        self.t0 = time.perf_counter()
        self.reused_prompt_tokens = self.reused_media = 0

    def on_token(self, token: int, finish: str | None, logprobs=None) -> bool:
        self.tokens.append(token)
        if logprobs is not None:
            self.logprobs.append(logprobs)
            self.emitted.append((self.i, token, logprobs))
        else:
            self.emitted.append((self.i, token))
        if finish is not None:
            self.results[self.i] = Generated(self.tokens, finish, self.inputs.num_prompt_tokens,
                                             time.perf_counter() - self.t0, self.reused_prompt_tokens, self.reused_media,
                                             self.logprobs)
        return False


class Engine:
    def __init__(self, model, max_batch_size: int = 32, max_batch_tokens: int = 65536, group=None,
                 decode: str = "auto", vision_ahead: bool | None = None, reuse: bool = True,
                 feature_cache_bytes: int = 2 << 30, min_prefix: int = 32, prefix_cache_bytes: int = 1 << 30):
        """`group`: the process group of an expert-parallel replica (see `expert_parallel`); every rank then calls
        `generate` once per gang step, possibly with no requests, and the ranks advance in lockstep.
        `decode`: how the decode step runs (see `decode_step.DecodeStep`); "auto" = $ERNIE_VL_DECODE if set, else
        "graph" on CUDA and "eager" on CPU. `vision_ahead`: encode the images/videos of the next requests while the
        current batch decodes; default: on CUDA, where it overlaps. `reuse`: keep encoded vision features in a
        cache of `feature_cache_bytes` across calls, so each distinct medium is encoded once, and prefill a
        prompt prefix of at least `min_prefix` tokens (media included) once for the requests that share it — admitted
        together, or later from the keys and values of earlier prompts kept in a `PrefixCache` of
        `prefix_cache_bytes`; waiting requests are ordered so that those sharing media are admitted together. Off:
        every request computed alone."""
        self.model = model
        self.group = group
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.batch = ContinuousBatch(model, max_slots=max_batch_size, decode=decode, exact=True,
                                     release_when_idle=False, group=group,  # kept: its cache and compiled step
                                     min_prefix=min_prefix if reuse else 0,
                                     prefix_cache=PrefixCache(prefix_cache_bytes) if reuse else None)
        self.vision_ahead = model.device.type == "cuda" if vision_ahead is None else vision_ahead
        self.features = ByteLRU(feature_cache_bytes) if reuse else None  # vision features by content key
        self.stats = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0,  # accumulated over calls
                      "media_encoded": 0, "media_reused": 0}

    def generate(self, requests: list[ModelInputs], settings: GenerationSettings) -> list[Generated]:
        return drain(self.stream(requests, settings))

    @torch.inference_mode()  # on a generator function torch re-enters the mode at every resumption only
    def stream(self, requests: list[ModelInputs], settings: GenerationSettings):
        """Generation as it runs: yields `[(request index, token), ...]` after every prefill or step that produced
        tokens (`(request index, token, sampling.TokenLogprobs)` when the settings ask for log-probabilities);
        returns the `Generated` list (`drain`)."""
        n = len(requests)
        results: list[Generated | None] = [None] * n
        empty = [Generated([], "length", r.num_prompt_tokens, 0.0) for r in requests]
        emitted: list[tuple[int, int]] = []
        rows = [_Request(i, r, settings, results, emitted) for i, r in enumerate(requests)]
        batch = self.batch
        need = max((r.num_prompt_tokens for r in requests), default=0) + max(settings.max_new_tokens, 1)
        if self.group is not None:  # lockstep: as many slots as the busiest rank, one prefill, steps until all done
            from .expert_parallel import max_over_ranks

            # the same slots and capacity on every rank: same decode-step shapes, rebuilds and graph captures
            slots, need = max_over_ranks([n, need], self.model.device, self.group)
            if slots == 0:
                return empty
            batch.reserve(slots, need)
            if settings.max_new_tokens <= 0:  # this rank generates nothing, but takes part in every exchange
                rows, results = [], empty
            self._admit(rows, None)
            while True:
                if emitted:
                    yield list(emitted)
                    emitted.clear()
                if not self._step():
                    break
            return results
        if settings.max_new_tokens <= 0 or n == 0:
            return empty
        batch.reserve(min(self.max_batch_size, n), need)
        if self.features is not None:  # reuse on: pop() = requests sharing media and first tokens together, longest first among them
            waiting = sorted(range(n), key=lambda i: (prefix_signature(requests[i]), -requests[i].num_prompt_tokens))[::-1]
        else:  # pop() = longest first
            waiting = sorted(range(n), key=lambda i: -requests[i].num_prompt_tokens)[::-1]
        encoder = VisionAhead(self.model, requests, self.features, overlap=self.vision_ahead)
        while waiting or batch.active:
            free = len(batch.free)
            if free and waiting:
                admit, budget = [], self.max_batch_tokens
                while waiting and len(admit) < free:
                    cost = requests[waiting[-1]].num_prompt_tokens * (len(admit) + 1)
                    if admit and cost > budget:
                        break
                    admit.append(waiting.pop())
                features = encoder.take(admit)
                for i in admit:
                    rows[i].reused_media = encoder.reused_by_request.get(i, 0)
                self._admit([rows[i] for i in admit], features)
                if self.vision_ahead and waiting:
                    encoder.launch(waiting[::-1][: self.max_batch_size])  # the next to be admitted, while these decode
                yield list(emitted)  # the admitted rows' first tokens
                emitted.clear()
            if batch.active:
                self._step()
                if emitted:
                    yield list(emitted)
                    emitted.clear()
        self.stats["media_encoded"] += encoder.encoded
        self.stats["media_reused"] += sum(encoder.reused_by_request.values())
        self.stats.update(batch.stats)
        return results

    def _admit(self, rows: list[_Request], features: list | None) -> None:
        t0 = time.perf_counter()
        self.batch.admit(rows, features)
        self.stats["prefill_s"] += time.perf_counter() - t0  # the first tokens were read: work is done

    def _step(self) -> bool:
        t0 = time.perf_counter()
        ran = self.batch.step()
        self.stats["decode_s"] += time.perf_counter() - t0
        self.stats["decode_steps"] += int(ran)
        return ran
