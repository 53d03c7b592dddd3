"""Dynamic batching across concurrent requests of one replica: a bounded queue feeding a continuous batch.

Requests (jobs) wait in a FIFO queue; one decode thread owns the model and loops:

    idle     -> block until a job arrives, then wait up to `batch_wait_timeout_s` (from that job's arrival) for company,
                unless the queue can already fill the batch; admit what fits
    decoding -> between two decode steps, admit at once whatever fits into free slots (no extra wait: a decode step
                is the natural batching interval); drop rows whose client went away; run one step

What "fits" is the decoder's rule (`ernie_vl.slots.ContinuousBatch.fits`): a free slot and padded work — longest (prompt + max_new_tokens) x rows —
within `max_batch_tokens`. Jobs are admitted in arrival order; a job that does not fit waits at the head, so a big
request is not starved by a stream of small ones.

Backpressure: `submit` refuses a job outright (`QueueFull`, answered 429) when `max_queued` jobs already wait, so an
overloaded replica answers quickly instead of hanging; jobs whose client went away (`cancelled`) leave the queue
without running.

Why not `@serve.batch`: it forms a batch, hands it to one call and waits for that call to finish; continuous
batching (joining a running batch between steps), per-token streaming from a step-wise decode and a bound on waiting
work are simpler with a queue we own.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Protocol


class QueueFull(Exception):
    """The replica's queue is at its bound; the caller should answer 429."""


class Job(Protocol):
    cancelled: bool
    enqueued_at: float


class JobQueue:
    """Thread-safe bounded FIFO: the event loop submits, the decode thread takes."""

    def __init__(self, max_queued: int = 256, batch_wait_timeout_s: float = 0.01):
        self.max_queued = max_queued
        self.wait_s = batch_wait_timeout_s
        self._jobs: collections.deque = collections.deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._jobs)

    def submit(self, *jobs) -> None:
        """Queue `jobs` (the choices of one request: all or none) or raise QueueFull at once (never blocks)."""
        with self._cond:
            if len(self._jobs) + len(jobs) > self.max_queued:
                raise QueueFull(f"{len(self._jobs)} requests are already waiting on this replica "
                                f"(limit {self.max_queued})")
            t = time.monotonic()
            for job in jobs:
                job.enqueued_at = t
                self._jobs.append(job)
            self._cond.notify()

    def push_front(self, jobs: list) -> None:
        """Put jobs taken but not run back at the head, in order (they were admitted already: no bound check)."""
        with self._cond:
            self._jobs.extendleft(reversed(jobs))
            self._cond.notify()

    def wake(self) -> None:
        """Wake a blocked `take` (e.g. to let the decode thread see a stop request)."""
        with self._cond:
            self._cond.notify_all()

    def take(self, fits: Callable[[list, object], bool], block: bool, timeout: float = 0.5) -> list:
        """Jobs from the head of the queue that `fits(taken_so_far, job)` admits, in order.

        `block=True` (the decoder is idle): wait up to `timeout` for a first job, then up to the batch wait budget
        for more, unless the head of the queue already does not fit (the batch is full). Returns [] on timeout.
        """
        with self._cond:
            if block:
                deadline = time.monotonic() + timeout
                while not self._live_head():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    self._cond.wait(left)
                fill_by = self._jobs[0].enqueued_at + self.wait_s
                while not self._would_fill(fits):
                    left = fill_by - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            taken: list = []
            while self._live_head() and fits(taken, self._jobs[0]):
                taken.append(self._jobs.popleft())
            return taken

    def _live_head(self) -> bool:
        """Drop cancelled jobs at the head; whether a live one remains."""
        while self._jobs and self._jobs[0].cancelled:
            self._jobs.popleft()
        return bool(self._jobs)

    def _would_fill(self, fits) -> bool:
        """Whether the queued jobs already fill a batch (some job would not fit after the ones before it)."""
        taken: list = []
        for job in self._jobs:
            if job.cancelled:
                continue
            if not fits(taken, job):
                return True
            taken.append(job)
        return False
