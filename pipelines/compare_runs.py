"""`ernie-vl compare RUN_A RUN_B [RUN_C ...] --out DIR`: compare eval output folders (evals.compare does the work).

1. Each run's `manifest.json` (when it has one): for every benchmark of two runs, the fingerprint parts that change
   the inputs (`fingerprint.INPUT_PARTS`: benchmark, prompt version, flavor, video frame policy) must be equal —
   otherwise the command refuses and names each differing part (`InputsDiffer`). A folder without a manifest
   (predictions from elsewhere) is compared without that check; the matched samples' questions, options and targets
   are compared in any case (`evals.compare.InputMismatch`).
2. `evals.compare.compare_runs` over the runs' `predictions/` (runs named as given on the command line).
3. `DIR/compare.parquet` and `DIR/flips.parquet` (schemas: `evals.compare.COMPARE_COLUMNS` / `FLIP_COLUMNS`),
   written atomically; then, when `evals.html.render_compare` exists, one page per pair of runs:
   `DIR/compare.html` for two runs, `DIR/compare-<i>-<j>.html` (1-based positions on the command line) for more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from evals.compare import COMPARE_FILE, FLIPS_FILE, compare_runs, compare_table, flips_table
from evals.scoring import read_predictions
from evals.storage import Storage

from .fingerprint import input_differences
from .manifest import load_manifest
from .resume import atomic_write_table


class InputsDiffer(ValueError):
    """Runs whose benchmarks were asked other inputs (fingerprint parts of `INPUT_PARTS` differ)."""


@dataclass
class CompareResult:
    out: Path
    rows: list[dict]
    flips: list[dict]
    pages: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # read, compare, write, html


def check_inputs(runs: dict[str, Path]) -> list[str]:
    """Raise :class:`InputsDiffer` naming every benchmark and part that differs between two runs' manifests; return
    notes for the runs that have no manifest (not checked)."""
    manifests = {name: load_manifest(path) for name, path in runs.items()}
    notes = [f"{name}: no manifest.json — fingerprints not checked (samples' inputs still are)"
             for name, m in manifests.items() if not m]
    problems = []
    names = list(runs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            bench_a = manifests[a].get("benchmarks") or {}
            bench_b = manifests[b].get("benchmarks") or {}
            for bench in sorted(set(bench_a) & set(bench_b)):
                diffs = input_differences(bench_a[bench].get("fingerprint_parts") or {},
                                          bench_b[bench].get("fingerprint_parts") or {})
                if diffs:
                    problems.append(f"{bench}: {a} vs {b}: " + "; ".join(diffs))
    if problems:
        raise InputsDiffer("the runs were not asked the same inputs (fingerprint parts that change the prompts or "
                           "media differ), refusing to compare:\n  " + "\n  ".join(problems))
    return notes


def run_compare(run_dirs: list, out, *, media: bool = True) -> CompareResult:
    """Compare the runs in ``run_dirs`` (two or more) and write the tables (and pages) into ``out``."""
    runs = {str(d): Storage.at(d) for d in run_dirs}  # local folders or object storage (evals.storage)
    if len(runs) < 2:
        raise ValueError(f"compare needs at least two different run folders, got {list(runs)}")
    for name, path in runs.items():
        if not path.is_dir():
            raise FileNotFoundError(f"run folder {name} does not exist")
    out = Path(out)
    seconds = {}
    t = time.perf_counter()
    notes = check_inputs(runs)
    rows_by_run = {name: read_predictions(path) for name, path in runs.items()}
    seconds["read"] = time.perf_counter() - t
    t = time.perf_counter()
    rows, flips = compare_runs(rows_by_run)
    seconds["compare"] = time.perf_counter() - t
    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_table(out / COMPARE_FILE, compare_table(rows))
    atomic_write_table(out / FLIPS_FILE, flips_table(flips))
    seconds["write"] = time.perf_counter() - t
    result = CompareResult(out=out, rows=rows, flips=flips, notes=notes, seconds=seconds)
    t = time.perf_counter()
    _render(result, runs, rows_by_run, media)
    seconds["html"] = time.perf_counter() - t
    return result


def _render(result: CompareResult, runs: dict[str, Path], rows_by_run: dict[str, list[dict]], media: bool) -> None:
    """The HTML pages, when `evals.html.render_compare` exists (another part of the project writes it)."""
    try:
        from evals.html import render_compare
    except ImportError:
        result.notes.append("no HTML renderer (evals.html.render_compare): wrote the Parquet tables only")
        return
    names = list(runs)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    for i, j in pairs:
        a, b = names[i], names[j]
        hook = None
        if media:
            from .report_media import media_hook

            hook = media_hook(runs[a], runs[b])
        flips = {(f["benchmark"], str(f.get("split") or ""), f["sample_id"]): f["flip"] for f in result.flips
                 if f["run_a"] == a and f["run_b"] == b}
        page = "compare.html" if len(pairs) == 1 else f"compare-{i + 1}-{j + 1}.html"
        result.pages.append(render_compare(
            result.out, [r for r in result.rows if r["run_a"] == a and r["run_b"] == b], rows_by_run[a],
            rows_by_run[b], labels=(a, b), runs=(runs[a].uri, runs[b].uri), flips=flips,
            media=hook, page=page))
