"""Dynamic batching across concurrent requests of one replica: a bounded queue, a token budget, a wait budget.

Requests (jobs) wait in a FIFO queue. A batch is closed when it holds `max_batch_size` jobs, when the next job
would push its padded work — longest (prompt + max_new_tokens) x rows, the rule `Engine.plan_batches` uses — over
`max_batch_tokens`, or when the oldest waiting job has waited `batch_wait_timeout_s`. Batches run one at a time in
a dedicated thread (the event loop stays free to accept, refuse and stream), so while one batch generates the next
one fills up.

Backpressure: `submit` refuses a job outright (`QueueFull`, answered 429) when `max_queued` jobs already wait;
nothing is ever queued without a bound, so an overloaded replica answers quickly instead of hanging. Jobs whose
client went away (`cancelled`) are dropped from the queue without running.

Why not `@serve.batch`: it sizes batches by count only (or a `batch_size_fn`), has no queue bound, and hands a
batch over only when it completes; streaming each row's tokens as they come out of a step-wise decode and
refusing work beyond a bound are simpler with a queue we own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol

log = logging.getLogger("ernie_vl.serve")


class QueueFull(Exception):
    """The replica's queue is at its bound; the caller should answer 429."""


class Job(Protocol):
    cost: int  # padded work of the job: prompt tokens + max new tokens
    cancelled: bool

    def fail(self, exc: BaseException) -> None: ...


class Batcher:
    """Collects jobs into batches and runs `run_batch(jobs)` (blocking) in one worker thread, batch after batch."""

    def __init__(
        self,
        run_batch: Callable[[list], None],
        max_batch_size: int = 32,
        max_batch_tokens: int = 16384,
        batch_wait_timeout_s: float = 0.01,
        max_queued: int = 256,
    ):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.wait_s = batch_wait_timeout_s
        self.max_queued = max_queued
        self._queue: collections.deque = collections.deque()
        self._arrival: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ernie-vl-decode")
        self.batches_run = 0
        self.running = 0  # jobs in the batch being generated

    # ------------------------------------------------------------------------------------------- public
    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start the batching loop on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._arrival = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="ernie-vl-batcher")

    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    def submit(self, job) -> None:
        """Queue `job` or raise QueueFull at once (never waits)."""
        self.start()
        if len(self._queue) >= self.max_queued:
            raise QueueFull(f"{len(self._queue)} requests are already waiting on this replica "
                            f"(limit {self.max_queued})")
        job.enqueued_at = time.monotonic()
        self._queue.append(job)
        self._arrival.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------------- loop
    def _can_fill(self) -> bool:
        """Whether the queue already holds a full batch (no reason to wait for more)."""
        n, longest = 0, 0
        for job in self._queue:
            if job.cancelled:
                continue
            longest = max(longest, job.cost)
            n += 1
            if n >= self.max_batch_size or longest * n > self.max_batch_tokens:
                return True
        return False

    def _take(self) -> list:
        batch, longest = [], 0
        while self._queue:
            job = self._queue[0]
            if job.cancelled:
                self._queue.popleft()
                continue
            new_longest = max(longest, job.cost)
            if batch and (len(batch) >= self.max_batch_size or new_longest * (len(batch) + 1) > self.max_batch_tokens):
                break
            batch.append(self._queue.popleft())
            longest = new_longest
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrival.clear()
                await self._arrival.wait()
            deadline = self._queue[0].enqueued_at + self.wait_s
            while not self._can_fill():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrival.clear()
                try:
                    await asyncio.wait_for(self._arrival.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            self.running = len(batch)
            try:
                await loop.run_in_executor(self._executor, self.run_batch, batch)
            except asyncio.CancelledError:
                for job in batch:
                    job.fail(RuntimeError("the replica is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - one failed batch must not stop the server
                log.exception("a generation batch of %d requests failed", len(batch))
                for job in batch:
                    job.fail(exc)
            finally:
                self.running = 0
                self.batches_run += 1
