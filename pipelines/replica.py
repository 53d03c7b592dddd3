"""The model replica: one Ray actor holding the model and its `Engine`, built once per actor.

`ReplicaStage` is the callable class Ray Data runs in an actor pool (`num_gpus` per replica on GPU clusters,
a fractional CPU on CPU-only machines). It receives one pack per call (batch_size=1 row), runs the engine on the
pack's prepared samples and returns one generated row per sample, error rows passed through.

Failure handling:
* an exception while generating a pack → the pack is retried one sample at a time, so only the culpable samples
  become error rows (`generation: ...`);
* a broken CUDA context (illegal memory access, device-side assert) cannot be recovered in-process: the actor
  exits with `os._exit(1)`, as Ray Data LLM does since ray-project/ray#60145 (a plain re-raise would fail the job),
  and the driver treats it as a lost actor;
* a lost actor (that exit, the OOM killer, a lost node): the driver builds the pipeline again over the samples not
  written yet, new actors on whatever nodes have room (`batch_eval.run_eval`, `cluster_failure.is_lost_worker`);
  the driver writes each sample once (`batch_eval.commit_block`), so nothing is written twice.

`build_replica` is the one factory for the model side; expert-parallel gangs (`expert_shards > 1`) plug in there.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from .stages import RECORD_FIELDS, generated_table, unpack
from .trace import trace

_FATAL_CUDA = ("illegal memory access", "device-side assert", "unspecified launch failure", "CUDA error: misaligned")


def check_replica_options(expert_shards: int) -> None:
    """Fail fast, on the driver, for replica layouts that cannot work (called before any actor starts)."""
    if expert_shards < 1:
        raise ValueError(f"--expert-shards must be >= 1, got {expert_shards}")


class _GangEngine:
    """An expert-sharded gang behind the `Engine.generate` interface (what `ReplicaStage` calls)."""

    def __init__(self, gang, config):
        self.gang, self.model = gang, type("GangModel", (), {"config": config})()

    def generate(self, requests, settings):
        return self.gang.generate(requests, settings)


def build_replica(model_path: str, *, dtype: str | None, device: str, expert_shards: int = 1,
                  batch_size: int = 16, batch_tokens: int = 16384, reuse: bool = True):
    """Load the model and wrap it in an `Engine`.

    With `expert_shards > 1` the replica is a gang of that many rank actors in one placement group
    (`replicas.ExpertShardedReplica`, one GPU each on GPU clusters); this actor only feeds it.
    """
    check_replica_options(expert_shards)
    from ernie_vl import load_model
    from ernie_vl.engine import Engine

    from ernie_vl.weights import default_dtype

    dtype = default_dtype(dtype, device)
    if expert_shards > 1:
        from ernie_vl.config import ModelConfig
        from replicas import ExpertShardedReplica

        gpu = device.startswith("cuda")
        gang = ExpertShardedReplica(
            model_path, expert_shards, dtype=dtype, device="cuda" if gpu else "cpu",
            num_cpus_per_rank=1.0 if gpu else 0.1, num_gpus_per_rank=1 if gpu else 0,
            engine_kwargs={"max_batch_size": batch_size, "max_batch_tokens": batch_tokens},
        )
        return _GangEngine(gang, ModelConfig.from_file(model_path))
    model = load_model(model_path, dtype=dtype, device=device)
    return Engine(model, max_batch_size=batch_size, max_batch_tokens=batch_tokens, reuse=reuse)


class ReplicaStage:
    """Ray Data actor: packs → generated rows (see the module docstring)."""

    def __init__(self, model_path: str, dtype: str | None, device: str, torch_threads: int, expert_shards: int,
                 batch_size: int, batch_tokens: int, generation, reuse: bool = True, max_answer_tokens: int | None = None):
        # NOTE: Ray Data constructs this class on the actor's main thread but calls it on an executor thread. Two
        # threads running torch ops means two OpenMP thread teams whose idle threads spin against each other; on a
        # machine with few cores that slowed generation by ~1.5x. So every torch call — load, warm-up, generate —
        # runs on this one thread.
        trace("replica", "init_start")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica")
        self._thread.submit(self._build, model_path, dtype, device, torch_threads, expert_shards, batch_size,
                            batch_tokens, reuse).result()
        from ernie_vl.generation import GenerationSettings

        # the job's settings over the checkpoint's EOS and pad ids
        defaults = GenerationSettings.from_checkpoint(model_path, self.engine.model.config)
        self.generation = generation.replace(eos_token_id=defaults.eos_token_id, pad_token_id=defaults.pad_token_id)
        self.answer_cap = answer_cap(model_path, max_answer_tokens)  # for reasoning rows only
        self.pid = os.getpid()
        trace("replica", "loaded")
        self._thread.submit(self.warm_up).result()
        trace("replica", "ready")

    def _build(self, model_path, dtype, device, torch_threads, expert_shards, batch_size, batch_tokens, reuse) -> None:
        import torch

        if device == "cpu":
            torch.set_num_threads(max(1, torch_threads))
        elif device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("this replica was given a GPU by Ray but torch sees no CUDA device")
        self.engine = build_replica(model_path, dtype=dtype, device=device, expert_shards=expert_shards,
                                    batch_size=batch_size, batch_tokens=batch_tokens, reuse=reuse)

    def warm_up(self) -> None:
        """Run one tiny image + text request so first-call costs (allocator, kernel selection, lazy buffers) are paid
        while the preprocessing actors fill the queue, not by the first real batch. Best effort: never fails."""
        import torch

        from ernie_vl.inputs import ModelInputs

        cfg = self.engine.model.config
        try:
            ids = torch.tensor([cfg.image_start_token_id, cfg.image_token_id, cfg.image_end_token_id, 5, 6, 7])
            req = ModelInputs.build(ids, cfg, torch.zeros(4, cfg.vision.patch_dim), torch.tensor([[1, 2, 2]]))
            self.engine.generate([req, req], self.generation.replace(max_new_tokens=2))
        except Exception:  # noqa: BLE001 - an optimisation only; real errors surface on real batches
            pass

    def settings(self, item: dict):
        """The generation settings of one prepared item: the job's, its token budget, and for a reasoning row the
        cap on answer tokens after `</think>`."""
        s = self.generation.replace(max_new_tokens=item["max_new_tokens"])
        return s.replace(**self.answer_cap) if item.get("thinking") and self.answer_cap else s

    def _generate(self, items: list[dict]) -> list:
        """Generate for items of one settings; on failure retry one by one. Returns Generated | error str."""
        s = self.settings(items[0])
        try:
            return self.engine.generate([it["inputs"] for it in items], s)
        except Exception as exc:
            self._die_if_fatal(exc)
            if len(items) == 1:
                return [f"generation: {type(exc).__name__}: {str(exc)[:500]}"]
        return [self._generate([it])[0] for it in items]

    @staticmethod
    def _die_if_fatal(exc: Exception) -> None:
        if any(s in str(exc) for s in _FATAL_CUDA):
            os._exit(1)  # let Ray restart the actor and retry this pack on a healthy CUDA context

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self._thread.submit(self._call, batch).result()

    def _call(self, batch: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        items = unpack(batch)
        todo: dict[tuple, list[int]] = {}
        for i, it in enumerate(items):
            if it["error"] is None and it["inputs"] is not None:
                todo.setdefault((it["max_new_tokens"], bool(it.get("thinking"))), []).append(i)
        results: dict[int, object] = {}
        for _, idx in sorted(todo.items()):
            for i, g in zip(idx, self._generate([items[i] for i in idx])):
                results[i] = g
        rows = []
        for i, it in enumerate(items):
            row = {k: it.get(k) for k in RECORD_FIELDS}
            row.update(error=it["error"], prompt_tokens=it["prompt_tokens"], visual_tokens=it["visual_tokens"],
                       media_items=it.get("media_items"),
                       preprocess_s=it.get("preprocess_s"), frame_indices=it.get("frame_indices"),
                       frame_timestamps=it.get("frame_timestamps"), thinking=bool(it.get("thinking")))
            g = results.get(i)
            if isinstance(g, str):
                row["error"] = g
            elif g is not None:
                row.update(tokens=list(g.tokens), finish_reason=g.finish_reason, latency_s=float(g.latency_s),
                           reused_prompt_tokens=g.reused_prompt_tokens, reused_media=g.reused_media)
            rows.append(row)
        trace("replica", "call", n=len(rows), s=round(time.perf_counter() - t0, 4))
        return generated_table(rows)


def answer_cap(model_path: str, max_answer_tokens: int | None) -> dict:
    """`GenerationSettings` changes that end a reasoning row `max_answer_tokens` tokens after its `</think>` token
    ({} without a cap). The marker must be one token of the checkpoint's tokenizer."""
    if max_answer_tokens is None:
        return {}
    from ernie_vl.reasoning import THINK_END
    from ernie_vl.tokenizer import Tokenizer

    ids = Tokenizer.from_pretrained(model_path).encode(THINK_END)
    if len(ids) != 1:
        raise NotImplementedError(f"--max-answer-tokens counts tokens after a one-token {THINK_END!r}; the tokenizer "
                                  f"of {model_path} encodes it as {ids}")
    return {"max_answer_tokens": max_answer_tokens, "think_end_token_id": ids[0]}
