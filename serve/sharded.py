"""Expert-sharded serving (`expert_shards` K > 1): the Serve replica feeds a gang of K rank actors.

The Serve replica actor keeps the HTTP routes, media handling, the processor, the tokenizer and the bounded queue
(`runtime.Frontend`), holds no GPU and no model weights. The model lives in `replicas.ExpertShardedReplica`: K rank
actors in one placement group, each with 1/K of the routed experts, running `ernie_vl.engine.Engine` in lockstep.

Batching: one gang thread loops

    wait for a first job, then up to `batch_wait_timeout_s` for company (JobQueue.take, as the decode thread does)
    -> take up to `max_batch_size` x K jobs and `max_batch_tokens` x K padded (prompt + new) tokens
    -> plan one lane per rank (`plan_lanes`) -> one `gang.stream_lanes` call -> each token to its job as it comes

A lane is one rank's share of the step, run under one `GenerationSettings`. A job is one choice of a request
(`choice.ChoiceRow`). Plain greedy jobs share lanes, balanced over the ranks by their work; a lane's budget is its
longest job's and each job keeps only its own `max_tokens` (greedy tokens do not depend on the budget, so the answer
equals a K = 1 replica's). A job with settings of its own — sampling (seeded with its seed, so its answer does not
depend on what else runs), penalties or log-probabilities — gets a lane of its own; at most K (K - 1 beside plain
greedy work) run per step, the others wait at the head of the queue for the next step. Jobs arriving during a step wait for the next
one: there is no joining a running step (the K = 1 replica's continuous batch does that).

Streaming: every rank streams its tokens step by step (`ExpertShardedReplica.stream_lanes`), and each goes to its
job at once, so a streamed response gets its chunks token by token, as at K = 1 (same text and stop-string
handling). A restarted step does not send a token twice: the rerun reproduces the tokens already sent and only the
later ones are delivered.

Faults: a dead rank (or a failing call) makes `ExpertShardedReplica` tear down and rebuild the whole gang and rerun
the step once, so its requests are answered. If the rerun fails too, the step's requests get 503 (`unavailable`),
the gang is rebuilt once more for later requests, and if that rebuild fails the replica reports itself unhealthy so
Serve replaces it.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

from ernie_vl.generation import GenerationSettings, finish_reason

from .errors import unavailable
from .runtime import Frontend
from .settings import ServeSettings, check_expert_shards_fit

log = logging.getLogger("ernie_vl.serve")


def need(job) -> int:
    """Cache positions a job may use: its prompt plus its token budget."""
    return job.prompt_tokens + job.settings.max_new_tokens


def solo(settings: GenerationSettings) -> bool:
    """Whether a job needs a lane of its own: its settings change tokens or outputs beyond the budget."""
    return settings.samples or settings.penalized or settings.logprobs is not None


def plan_lanes(jobs: list, k: int) -> tuple[list[list], list]:
    """One gang step: `k` lanes (jobs per rank, some possibly empty) and the jobs left for a later step.

    Plain greedy jobs share lanes (longest first onto the least-loaded lane); each `solo` job (sampling, penalties,
    log-probabilities) takes a lane of its own, leaving at least one lane to the greedy jobs when there are any.
    Solo jobs beyond that are returned, in order.
    """
    greedy = [j for j in jobs if not solo(j.settings)]
    sampled = [j for j in jobs if solo(j.settings)]
    n_sampled = min(len(sampled), k - 1 if greedy else k)
    n_greedy = k - n_sampled
    lanes: list[list] = [[] for _ in range(n_greedy)]
    load = [0] * n_greedy
    for job in sorted(greedy, key=need, reverse=True):
        r = min(range(n_greedy), key=lambda r: (load[r], len(lanes[r])))
        lanes[r].append(job)
        load[r] += need(job)
    lanes += [[j] for j in sampled[:n_sampled]]
    return lanes, sampled[n_sampled:]


class GangRuntime(Frontend):
    """The runtime of a Serve replica whose model is an expert-sharded gang (see the module docstring)."""

    def __init__(self, settings: ServeSettings):
        from ernie_vl.config import ModelConfig
        from ernie_vl.weights import default_dtype
        from replicas import ExpertShardedReplica

        path = settings.model_path()
        k = settings.expert_shards
        check_expert_shards_fit(k, path)
        self._setup(settings, path, SimpleNamespace(config=ModelConfig.from_file(path)))
        self.k = k
        gpus = float(settings.num_gpus or 0)
        self.device = settings.device or ("cuda" if gpus > 0 else "cpu")
        dtype = default_dtype(settings.dtype, self.device)
        rank_cpus = settings.shard_num_cpus or (1.0 if gpus > 0 else 0.25)
        self.gang = ExpertShardedReplica(
            path, k, placement=settings.expert_placement, dtype=dtype, device=self.device,
            num_cpus_per_rank=rank_cpus, num_gpus_per_rank=gpus,
            engine_kwargs={"max_batch_size": settings.max_batch_size, "max_batch_tokens": settings.max_batch_tokens},
        )
        self.broken: str | None = None  # why the gang cannot be rebuilt (the replica is then unhealthy)
        self.steps = self.requests = 0  # gang calls made, requests they carried
        self._thread = threading.Thread(target=self._loop, name="ernie-vl-gang", daemon=True)
        self._thread.start()
        log.info("ernie-vl replica ready: model %s from %s as %d expert shards on %s (%g CPU, %g GPU each), eos %s",
                 self.model_name, path, k, self.device, rank_cpus, gpus, self.eos)

    # ------------------------------------------------------------------------------------------- batching
    def fits(self, taken: list, job) -> bool:
        """A step takes up to max_batch_size x K jobs and max_batch_tokens x K padded tokens (K lanes)."""
        if not taken:
            return True
        rows = len(taken) + 1
        if rows > self.settings.max_batch_size * self.k:
            return False
        longest = max(need(j) for j in [*taken, job])
        return longest * rows <= self.settings.max_batch_tokens * self.k

    def lane_settings(self, lane: list) -> GenerationSettings:
        if not lane:
            return self.defaults.replace(max_new_tokens=0)
        if solo(lane[0].settings):  # a lane of its own: the job's settings
            return lane[0].settings
        return self.defaults.replace(max_new_tokens=max(j.settings.max_new_tokens for j in lane), do_sample=False)

    def _loop(self) -> None:
        while not self._stop.is_set():
            jobs: list = []
            try:
                jobs = self.queue.take(self.fits, block=True)
                if not jobs:
                    continue
                if self.broken:
                    self._fail(jobs, unavailable(f"this replica's expert-sharded model is down ({self.broken}); "
                                                 "it is being replaced, retry later"))
                    continue
                lanes, later = plan_lanes(jobs, self.k)
                if later:
                    self.queue.push_front(later)
                jobs = [j for lane in lanes for j in lane]
                self.steps += 1
                self.requests += len(jobs)
                self._step(lanes)
            except Exception as exc:  # noqa: BLE001 - the thread must survive a bad step
                log.exception("generation failed for %d requests", len(jobs))
                self._fail(jobs, exc)

    def _step(self, lanes: list[list]) -> None:
        """One gang step; every token goes to its job as soon as its rank produced it."""
        from replicas import GangError

        jobs = [j for lane in lanes for j in lane]
        counts = {id(j): 0 for j in jobs}
        open_jobs = {id(j) for j in jobs}
        stream = self.gang.stream_lanes([([j.inputs for j in lane], self.lane_settings(lane)) for lane in lanes])
        try:
            for r, i, tok, *logprobs in stream:
                job = lanes[r][i]
                if id(job) in open_jobs and self._feed(job, tok, counts, *logprobs):
                    open_jobs.discard(id(job))
        except GangError as exc:
            log.error("expert-sharded gang failed for %d requests after a restart: %s", len(jobs), exc)
            self._fail([j for j in jobs if id(j) in open_jobs], unavailable(
                "the expert-sharded model replica lost a rank and the retry on its restarted gang failed too; "
                "retry later"))
            self._rebuild()
            return
        for job in jobs:
            if id(job) in open_jobs:
                job.fail(RuntimeError(f"the gang returned {counts[id(job)]} tokens without EOS for a budget of "
                                      f"{job.settings.max_new_tokens}"))

    def _feed(self, job, tok: int, counts: dict, logprobs=None) -> bool:
        """Hand one token to a job as the decode thread would, cut at its own budget; True when the job is done."""
        counts[id(job)] += 1
        finish = finish_reason(tok, counts[id(job)], job.settings)
        return bool(job.on_token(tok, finish, logprobs)) or finish is not None

    @staticmethod
    def _fail(jobs: list, exc: BaseException) -> None:
        for job in jobs:
            job.fail(exc)

    def _rebuild(self) -> None:
        """After a failed retry: rebuild the gang for later requests; if even that fails, the replica is unhealthy."""
        try:
            self.gang.restart()
        except Exception as exc:  # noqa: BLE001
            self.broken = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.exception("could not rebuild the expert-sharded gang; this replica is now unhealthy")

    # ------------------------------------------------------------------------------------------- state
    def healthy(self) -> bool:
        return self._thread.is_alive() and self.broken is None

    def status(self) -> dict:
        """For operators and tests (a Serve handle call, not an HTTP route)."""
        return {"expert_shards": self.k, "restarts": self.gang.restarts, "rank_actors": self.gang.rank_actors,
                "broken": self.broken, "steps": self.steps, "requests": self.requests}

    def close(self) -> None:
        super().close()
        try:
            self.gang.shutdown()
        except Exception:  # noqa: BLE001 - best effort while the replica goes away
            pass
