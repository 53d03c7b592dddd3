"""An LLM judge for a run: the HTTP client (:mod:`evals.judge_client`) behind the run's reply cache
(:mod:`evals.judge_cache`), with per-benchmark counts for the manifest.

:meth:`Judge.ask` takes the prompts of one benchmark, answers those already in the cache from it, asks the judge
the rest (each distinct prompt once, ``settings.concurrency`` at a time) and appends every reply to the cache in
batches of :data:`FLUSH_EVERY`, so an interrupted scoring run keeps what it was told. A prompt the judge did not
answer (after the client's retries) gets None: the caller scores that row by the benchmark's rule and the
``failed`` count says how many. Nothing is cached for it, so the next run asks again.

Which prompts to ask and how to read a reply belong to the benchmark (``Benchmark.judge_prompt`` /
``Benchmark.score_judged``); :func:`evals.scoring.score_rows` connects the two.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from evals.judge_cache import JudgeCache, utc_now
from evals.judge_client import JudgeClient, JudgeError, JudgeSettings
from evals.storage import Storage

FLUSH_EVERY = 32


@dataclass
class JudgeStats:
    """Distinct prompts of one benchmark: answered by the judge now (``asked``), from the cache (``cached``), or
    not answered (``failed``, with the first reason)."""

    asked: int = 0
    cached: int = 0
    failed: int = 0
    error: str | None = None
    rows: dict[str, int] = field(default_factory=lambda: {"judged": 0, "rule": 0})


class Judge:
    """The judge of one output folder; see the module docstring."""

    def __init__(self, settings: JudgeSettings, out_dir, client: JudgeClient | None = None):
        self.settings = settings
        self.out_dir = Storage.at(out_dir)  # a local folder or object storage (evals.storage)
        self.cache = JudgeCache(out_dir)
        self.client = client or JudgeClient(settings)
        self.stats: dict[str, JudgeStats] = {}

    @property
    def model(self) -> str:
        return self.settings.model

    def ask(self, benchmark: str, prompts: list[str], max_tokens: int) -> dict[str, str | None]:
        """``{prompt: reply or None}`` for every prompt (duplicates asked once)."""
        stats = self.stats.setdefault(benchmark, JudgeStats())
        replies: dict[str, str | None] = {}
        missing = []
        for prompt in dict.fromkeys(prompts):
            cached = self.cache.get(self.model, prompt)
            if cached is not None:
                replies[prompt] = cached
                stats.cached += 1
            else:
                missing.append(prompt)
        if not missing:
            return replies
        buffer: list[dict] = []
        with ThreadPoolExecutor(max_workers=min(self.settings.concurrency, len(missing)),
                                thread_name_prefix="judge") as pool:
            futures = {pool.submit(self.client.chat, p, max_tokens): p for p in missing}
            try:
                for future in as_completed(futures):
                    prompt = futures[future]
                    try:
                        reply = future.result()
                    except JudgeError as exc:
                        replies[prompt] = None
                        stats.failed += 1
                        stats.error = stats.error or str(exc)
                        continue
                    replies[prompt] = reply
                    stats.asked += 1
                    buffer.append({"judge_model": self.model, "prompt": prompt, "reply": reply,
                                   "max_tokens": max_tokens, "benchmark": benchmark, "asked_at": utc_now()})
                    if len(buffer) >= FLUSH_EVERY:
                        self.cache.add(buffer)
                        buffer = []
            finally:
                for future in futures:
                    future.cancel()
                self.cache.add(buffer)
        return replies

    def record(self, benchmark: str) -> dict:
        """What the manifest says about this judge's work on ``benchmark`` (no API key, ever)."""
        stats = self.stats.get(benchmark, JudgeStats())
        out = {"judge_model": self.model, "judge_url": self.settings.url, "asked": stats.asked,
               "cached": stats.cached, "failed": stats.failed, "rows_judged": stats.rows["judged"],
               "rows_rule": stats.rows["rule"]}
        if stats.error:
            out["error"] = stats.error[:300]
        return out
