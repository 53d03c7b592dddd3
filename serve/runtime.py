"""The model side of a replica: checkpoint, processor, tokenizer, queue and decode thread; requests in, token events out.

One runtime per replica: `ModelRuntime` (the whole model in this process, below) or, with `expert_shards` K > 1,
`sharded.GangRuntime` (a gang of K rank actors holds the model; see that module); `make_runtime` picks. `prepare`
turns a validated request into a `choice.RequestJob` (media, processor and limit checks run in a small thread pool, so
a big video does not stall the event loop); `submit` queues its `n` choice rows (batching.py); in `ModelRuntime` one
decode thread admits queued rows into the continuous batch (`ernie_vl.slots`) between decode steps, and each row
pushes its events (text deltas split into reasoning and answer, log-probabilities, done; see choice.py) to its
request's asyncio queue as tokens come out (`GangRuntime` feeds the same rows as its gang streams tokens).

The model, the processor and the decoding of token ids to text are the batch pipeline's: `ernie_vl.load_model`
(bfloat16 on GPUs by default, as the pipeline), `ernie_vl.Processor.prepare`, the checkpoint's generation defaults
(`GenerationSettings.from_checkpoint`), `ernie_vl.tokenizer.Tokenizer.decode(..., skip_special_tokens=True)`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ernie_vl.generation import GenerationSettings
from ernie_vl.inputs import ModelInputs
from ernie_vl.prefix import PrefixCache
from ernie_vl.slots import ContinuousBatch

from .batching import JobQueue
from .choice import RequestJob, TokenText
from .prepare import (check_estimate, choice_settings, estimate_image_tokens, request_settings, run_processor,
                      to_processor_messages)
from .schemas import ChatCompletionRequest
from .settings import ServeSettings
from .textstream import TextStream, byte_fallback_ids

log = logging.getLogger("ernie_vl.serve")
MIN_PREFIX = 32  # shared prompt tokens (media included) worth continuing from


class Frontend:
    """Everything a replica does around generation: processor, tokenizer, EOS ids, the checkpoint's generation
    defaults, limits, the preprocessing pool and the bounded job queue. `ModelRuntime` (the whole model in this
    process) and `sharded.GangRuntime` (an expert-sharded gang of rank actors) add what generates."""

    def _setup(self, settings: ServeSettings, path: Path, model) -> None:
        """`model`: the loaded model, or any object with the checkpoint's `config` (`ernie_vl.config.ModelConfig`)."""
        from ernie_vl import Processor
        from ernie_vl.tokenizer import Tokenizer

        self.settings = settings
        self.processor = Processor.from_pretrained(path)
        self.tokenizer = Tokenizer.from_pretrained(path)
        self.defaults = GenerationSettings.from_checkpoint(path, model.config)
        self.eos = list(self.defaults.eos_token_id)
        backend = getattr(self.tokenizer, "backend", None)
        self.byte_ids = byte_fallback_ids(backend.get_vocab()) if backend is not None else set()
        self.token_text = TokenText(self.tokenizer, self.byte_ids)
        self.max_context = int(model.config.text.max_position_embeddings)
        self.model_name = settings.model_name()
        self.queue = JobQueue(settings.max_queued_requests, settings.batch_wait_timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=settings.preprocess_workers, thread_name_prefix="ernie-vl-prep")
        self._stop = threading.Event()
        for root in settings.media_roots:
            if not Path(root).is_dir():
                log.warning("media root %s is not a folder on this node: local media under it will not be found", root)

    def decode_text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _prepare_sync(self, req: ChatCompletionRequest) -> tuple[ModelInputs, GenerationSettings]:
        messages, infos, locations = to_processor_messages(req, self.settings)
        check_estimate(estimate_image_tokens(self.processor, infos), self.settings)
        inputs = run_processor(self.processor, messages, locations, req.template_kwargs())
        return inputs, request_settings(req, self.settings, self.defaults, inputs.num_prompt_tokens, self.max_context)

    async def prepare(self, req: ChatCompletionRequest) -> RequestJob:
        """Media, processor and limits (in the preprocessing pool) -> a job ready to submit. Raises APIError."""
        loop = asyncio.get_running_loop()
        inputs, settings = await loop.run_in_executor(self._pool, self._prepare_sync, req)
        return RequestJob(inputs, choice_settings(settings, req.n),
                          lambda: TextStream(self.decode_text, req.stop_list(), self.byte_ids),
                          want_deltas=req.stream, thinking=req.thinking(), token_text=self.token_text)

    def submit(self, job: RequestJob) -> None:
        """Queue a prepared job's choices at once (raises batching.QueueFull when the replica's queue cannot take
        them all)."""
        self.queue.submit(*job.choices)
        job.enqueued_at = job.choices[0].enqueued_at

    def close(self) -> None:
        self._stop.set()
        self.queue.wake()


class ModelRuntime(Frontend):
    """Loads everything once per replica and runs the decode thread."""

    def __init__(self, settings: ServeSettings):
        import torch

        from ernie_vl import load_model
        from ernie_vl.weights import default_dtype

        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        path = settings.model_path()
        device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = default_dtype(settings.dtype, device)
        self.model = load_model(path, dtype=dtype, device=device)
        self.model.eval()
        self._setup(settings, path, self.model)
        self.decoder = ContinuousBatch(
            self.model, max_slots=settings.max_batch_size, max_batch_tokens=settings.max_batch_tokens,
            min_prefix=MIN_PREFIX if settings.reuse else 0,
            prefix_cache=PrefixCache(settings.prefix_cache_bytes) if settings.reuse else None)
        self._thread = threading.Thread(target=self._decode_loop, name="ernie-vl-decode", daemon=True)
        self._thread.start()
        log.info("ernie-vl replica ready: model %s from %s on %s, eos %s", self.model_name, path, device, self.eos)

    def _decode_loop(self) -> None:
        """The decode thread: admit what fits between steps, step, repeat; a failure fails only the rows it hit."""
        d = self.decoder
        while not self._stop.is_set():
            jobs: list = []
            try:
                jobs = self.queue.take(d.fits, block=not d.active)
                d.admit(jobs)
                d.step()
            except Exception as exc:  # noqa: BLE001 - the thread must survive a bad batch
                log.exception("generation failed for %d live requests", len(d.active) + len(jobs))
                failed = {id(j): j for j in [*d.reset(), *jobs]}
                for job in failed.values():
                    job.fail(exc)

    def healthy(self) -> bool:
        return self._thread.is_alive()


def make_runtime(settings: ServeSettings):
    """The runtime of one Serve replica: the model in this process (K = 1) or an expert-sharded gang (K > 1)."""
    if settings.expert_shards > 1:
        from .sharded import GangRuntime

        return GangRuntime(settings)
    return ModelRuntime(settings)
