"""Live progress per benchmark: done/total, samples/s, tokens/s, ETA — on the terminal and in the manifest.

One `BenchmarkProgress` per benchmark counts rows as the driver commits them. `ProgressPrinter` redraws one line per
benchmark on a terminal (carriage return) or, when stderr is not a terminal (CI logs, `nohup`), prints a plain line
at most every `interval` seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field


def _fmt_duration(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def error_reason(error: str) -> str:
    """The reason class of an error string: the text before the first ':' ('media', 'prompt_too_long', ...)."""
    head = error.split(":", 1)[0].strip()
    return head if head and len(head) <= 40 else "other"


@dataclass
class BenchmarkProgress:
    """Counters of one benchmark in one invocation (`skipped` = already written by an earlier run)."""

    name: str
    total: int = 0
    skipped: int = 0
    skipped_failed: int = 0
    written: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    reused_prompt_tokens: int = 0
    errors: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    first_row: float | None = None
    finished: float | None = None

    def add(self, n: int, failed_reasons: list[str], prompt_tokens: int, generated_tokens: int,
            reused_prompt_tokens: int = 0) -> None:
        if self.first_row is None:
            self.first_row = time.monotonic()
        self.written += n
        self.failed += len(failed_reasons)
        self.errors.update(failed_reasons)
        self.prompt_tokens += prompt_tokens
        self.generated_tokens += generated_tokens
        self.reused_prompt_tokens += reused_prompt_tokens

    @property
    def done(self) -> int:
        return self.skipped + self.written

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def rates(self) -> tuple[float, float]:
        """(samples/s, generated tokens/s) over this invocation's wall time."""
        dt = max(self.elapsed, 1e-9)
        return self.written / dt, self.generated_tokens / dt

    def eta(self) -> float | None:
        sps, _ = self.rates()
        left = self.total - self.done
        if left <= 0:
            return 0.0
        return left / sps if sps > 0 else None

    def line(self) -> str:
        sps, tps = self.rates()
        pct = 100.0 * self.done / self.total if self.total else 100.0
        s = (f"[{self.name}] {self.done}/{self.total} ({pct:.0f}%) {sps:.2f} samples/s {tps:.0f} tok/s "
             f"ETA {_fmt_duration(self.eta())}")
        if self.reused_prompt_tokens:
            s += f" reused {100.0 * self.reused_prompt_tokens / max(self.prompt_tokens, 1):.0f}% of prompt tokens"
        if self.failed:
            s += f" failed {self.failed}"
        if self.skipped:
            s += f" (resumed: {self.skipped} already done)"
        return s

    def summary(self) -> dict:
        sps, tps = self.rates()
        return {
            "total": self.total,
            "written": self.written,
            "skipped": self.skipped,
            "failed_this_run": self.failed,
            "errors_this_run": dict(self.errors),
            "elapsed_s": round(self.elapsed, 3),
            "first_row_s": None if self.first_row is None else round(self.first_row - self.started, 3),
            "samples_per_s": round(sps, 4),
            "generated_tokens_per_s": round(tps, 2),
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "reused_prompt_tokens": self.reused_prompt_tokens,
        }


class ProgressPrinter:
    """Draws the per-benchmark progress lines to `stream` (stderr by default)."""

    def __init__(self, benchmarks: list[BenchmarkProgress], enabled: bool = True, stream=None, interval: float | None = None):
        self.benchmarks = benchmarks
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self._last = 0.0
        self._drawn = 0
        self._shown: list[str] = []

    def update(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        lines = [b.line() for b in self.benchmarks]
        if lines == self._shown:
            return
        self._shown = lines
        if self.tty:
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F")  # cursor up to the first line we drew
            for ln in lines:
                self.stream.write("\x1b[2K" + ln + "\n")
            self._drawn = len(lines)
        else:
            for ln in lines:
                self.stream.write(ln + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.update(force=True)
