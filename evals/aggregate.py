"""Building metric rows from scored sample rows.

A *scored row* is ``sample.to_record()`` plus ``prediction``, ``extracted``, ``score``, ``error``.
A *metric row* is ``{benchmark, flavor, metric, category, value, n}``; ``category`` None = overall.
:data:`METRIC_COLUMNS` is the one definition of those columns and of ``metrics.parquet`` (the pipeline and
:mod:`evals.scoring` both write :func:`metrics_table`).

Conventions used by every benchmark:

* Values are on the scale the benchmark's leaderboard uses: percentages (0–100) for accuracy-like
  metrics; MME is a sum of category scores; OCRBench a hit count; counts for ``errors``/``unparsed``.
* Per-category rows use ``metric`` with ``category=<value>`` for the sample's primary ``category``;
  other groupings use ``<metric>_by_<field>`` (``accuracy_by_duration``, ``accuracy_by_subcategory``).
* A row with an ``error`` is a failure: it scores 0 and is counted in ``errors``.
* ``unparsed`` counts rows without error whose ``extracted`` answer is None.
* ``unjudged`` (judge-only benchmarks) counts rows without error that no judge has scored.
* :data:`COUNT_METRICS` are counts (no interval); every other value gets ``stderr``, ``ci_low``, ``ci_high`` from
  :mod:`evals.bootstrap`. It resamples fast what it knows the form of: :func:`mean_rows` reports each metric row
  it makes, with the rows averaged (:class:`MeanTrace`), and a benchmark may report a value computed from sums over
  resampling units with :func:`traced_sums` (:class:`SumTrace`: POPE's F1, MME's acc+), to an active
  :func:`trace_values` (nothing is recorded outside one); any other value is resampled through ``aggregate``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from evals.sample import decode_record

# (name, type, description): the columns of a metric row and of metrics.parquet, in this order.
METRIC_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("benchmark", pa.string(), "benchmark registry name"),
    ("flavor", pa.string(), "scoring convention: official, lmms-eval, vlmevalkit"),
    ("metric", pa.string(), "metric name (accuracy, anls, relaxed_accuracy, ...; errors and unparsed are counts)"),
    ("category", pa.string(), "null for the overall value, else the category it is restricted to"),
    ("value", pa.float64(), "metric value"),
    ("n", pa.int64(), "samples the value is computed over"),
    # uncertainty (evals.bootstrap): null for the counts of COUNT_METRICS and for values over fewer than 2 units
    ("stderr", pa.float64(), "standard error of value: analytic for a mean of per-sample scores (clustered by the "
                             "resampling unit), else the standard deviation of the bootstrap values"),
    ("ci_low", pa.float64(), "95 % interval, low end: percentile bootstrap over the resampling units"),
    ("ci_high", pa.float64(), "95 % interval, high end"),
    ("stderr_method", pa.string(), "how stderr was computed: analytic or bootstrap"),
    ("resamples", pa.int64(), "bootstrap resamples behind ci_low / ci_high"),
    ("bootstrap_seed", pa.int64(), "seed of the bootstrap (fixed: the same predictions give the same interval)"),
    ("unit", pa.string(), "what the bootstrap resamples: sample, or the benchmark's group (MMBench circular group, "
                          "MME image, Video-MME video, HallusionBench question set)"),
    ("units", pa.int64(), "resampling units the value is computed over"),
]
METRIC_NAMES = [n for n, _, _ in METRIC_COLUMNS]
METRICS_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in METRIC_COLUMNS])
#: metrics whose value is a count of rows (no interval, not compared)
COUNT_METRICS = frozenset({"errors", "unparsed", "unjudged", "answered", "circular_groups"})


def has_error(row: dict) -> bool:
    err = row.get("error")
    return isinstance(err, str) and err != ""


def row_score(row: dict) -> float:
    """The per-sample score; errors and missing/NaN scores count as 0."""
    if has_error(row):
        return 0.0
    score = row.get("score")
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return 0.0
    return float(score)


def is_right(row: dict) -> bool:
    """A full score (an error row is wrong): a "correct" sample in the sample browser, a flip in a comparison."""
    return row_score(row) >= 1.0


def metric_row(benchmark: str, flavor: str, metric: str, category: str | None, value: float | None, n: int) -> dict:
    """A metric row with every column of :data:`METRIC_COLUMNS` (the uncertainty columns null until
    :func:`evals.bootstrap.with_uncertainty` fills them)."""
    row = dict.fromkeys(METRIC_NAMES)
    row.update(benchmark=benchmark, flavor=flavor, metric=metric, category=category,
               value=None if value is None else float(value), n=int(n))
    return row


@dataclass(frozen=True)
class MeanTrace:
    """A metric row made by :func:`mean_rows`: ``row["value"] == scale * mean(score(m) for m in members)``."""

    row: dict
    members: list[dict]
    score: Callable[[dict], float]
    scale: float


@dataclass(frozen=True)
class SumTrace:
    """A metric row whose value is a function of sums over resampling units:
    ``row["value"] == combine(stats_UK.sum(axis=0)[None])[0]``; ``combine`` maps ``[B, K]`` sums to ``[B]`` values
    (NaN where undefined), so that resampled sums are evaluated at once."""

    row: dict
    units: list[str]  # [U] unit keys (Benchmark.resampling_unit)
    stats_UK: np.ndarray
    combine: Callable[[np.ndarray], np.ndarray]


_TRACES: ContextVar[list | None] = ContextVar("value_traces", default=None)


def traced_sums(row: dict, units: list[str], stats_UK: np.ndarray, combine: Callable[[np.ndarray], np.ndarray]) -> dict:
    """``row``, reported as a :class:`SumTrace` to an active :func:`trace_values`."""
    traces = _TRACES.get()
    if traces is not None:
        traces.append(SumTrace(row, list(units), np.asarray(stats_UK, dtype=np.float64), combine))
    return row


def unit_sums(members: list[dict], unit: Callable[[dict], str | None], group: Callable[[dict], Any],
              score: Callable[[dict], float] = row_score) -> tuple[list[str], np.ndarray, list]:
    """Per resampling unit (``unit``, e.g. ``Benchmark.resampling_unit``; first-seen order) and group (``group``:
    members whose key is None or "" left out, as :func:`group_by`), the members' score sum and count:
    ``(units, stats [U, 2·G] as (sum, count) per group, group keys in group_by order)``."""
    keys = list(group_by(members, group))
    column = {k: i for i, k in enumerate(keys)}
    units: dict[str, int] = {}
    u_idx, g_idx, scores = [], [], []
    for i, m in enumerate(members):
        g = group(m)
        if g is None or g == "":
            continue
        u_idx.append(units.setdefault(unit(m) or f"#{i}", len(units)))
        g_idx.append(column[g])
        scores.append(score(m))
    stats = np.zeros((len(units), 2 * len(keys)))
    np.add.at(stats, (u_idx, [2 * g for g in g_idx]), scores)
    np.add.at(stats, (u_idx, [2 * g + 1 for g in g_idx]), 1.0)
    return list(units), stats, keys


def macro_sums(members: list[dict], group: Callable[[dict], Any], unit: Callable[[dict], str | None], *,
               score: Callable[[dict], float] = row_score, scale: float = 100.0) -> tuple:
    """``(units, stats, combine)`` for :func:`traced_sums` of ``scale`` × the mean over groups of the members' mean
    score (a macro mean: MVBench's task mean, MMStar's lmms-eval accuracy)."""
    units, stats, _ = unit_sums(members, unit, group, score)

    def combine(sums_BK: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return scale * (sums_BK[:, 0::2] / sums_BK[:, 1::2]).mean(axis=1)

    return units, stats, combine


def total_sums(members: list[dict], unit: Callable[[dict], str | None], *,
               score: Callable[[dict], float] = row_score) -> tuple:
    """``(units, stats, combine)`` for :func:`traced_sums` of the members' summed score (OCRBench's hit count)."""
    units, stats, _ = unit_sums(members, unit, lambda m: "all", score)
    if not units:  # no member: a total of 0
        stats = np.zeros((0, 2))
    return units, stats, lambda sums_BK: sums_BK[:, 0]


@contextmanager
def trace_values() -> Iterator[list]:
    """Within the block, :func:`mean_rows` and :func:`traced_sums` append a :class:`MeanTrace` / :class:`SumTrace`
    per metric row they make to the list yielded (a benchmark's ``aggregate`` may drop or replace those rows: match
    them by identity)."""
    traces: list = []
    token = _TRACES.set(traces)
    try:
        yield traces
    finally:
        _TRACES.reset(token)


def mean_row(benchmark: str, flavor: str, metric: str, category: str | None, members: list[dict], *,
             score: Callable[[dict], float] = row_score, scale: float = 100.0) -> dict:
    """One metric row of ``scale`` × the members' mean score (the row :func:`mean_rows` makes per group), for a
    grouping ``mean_rows`` does not make (multi-label breakdowns); reported to :func:`trace_values` like its rows,
    so that its interval is resampled from the members' sums."""
    return _mean_row(benchmark, flavor, metric, category, members, score, scale)


def _mean_row(benchmark, flavor, metric, category, members, score, scale) -> dict:
    row = metric_row(benchmark, flavor, metric, category, scale * sum(map(score, members)) / len(members),
                     len(members))
    traces = _TRACES.get()
    if traces is not None:
        traces.append(MeanTrace(row, members, score, scale))
    return row


def metrics_table(rows: list[dict]) -> pa.Table:
    """Metric rows (missing keys become null) → a table in :data:`METRICS_SCHEMA`."""
    return pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in METRIC_NAMES}, schema=METRICS_SCHEMA)


def decode_rows(rows: Iterable[dict]) -> list[dict]:
    """Decode the JSON fields (options, targets, meta) of every row."""
    return [decode_record(r) for r in rows]


def group_by(rows: list[dict], key: Callable[[dict], Any]) -> dict[Any, list[dict]]:
    groups: dict[Any, list[dict]] = defaultdict(list)
    for row in rows:
        value = key(row)
        if value is not None and value != "":
            groups[value].append(row)
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def mean_rows(benchmark: str, flavor: str, metric: str, rows: list[dict], *,
              score: Callable[[dict], float] = row_score, scale: float = 100.0,
              by: dict[str, Callable[[dict], Any]] | None = None) -> list[dict]:
    """Overall mean score, mean per ``category``, and mean per each extra grouping in ``by``."""
    out = []
    if rows:
        out.append(_mean_row(benchmark, flavor, metric, None, rows, score, scale))
    groupings = {"": lambda r: r.get("category")}
    groupings.update(by or {})
    for suffix, key in groupings.items():
        name = metric if not suffix else f"{metric}_by_{suffix}"
        for value, members in group_by(rows, key).items():
            out.append(_mean_row(benchmark, flavor, name, str(value), members, score, scale))
    return out


def mean_scored_rows(benchmark: str, flavor: str, metric: str, rows: list[dict], **kwargs) -> list[dict]:
    """:func:`mean_rows` over the rows that have a score or an error, for benchmarks whose score only a judge gives
    (MM-Vet, CharXiv): an unjudged row (no error, no score) is left out instead of counting 0, and
    ``unjudged`` counts them. With no scored row at all the metric is null (n = 0)."""
    scored = [r for r in rows if has_error(r) or r.get("score") is not None]
    unjudged = metric_row(benchmark, flavor, "unjudged", None, len(rows) - len(scored), len(rows))
    if not scored:
        return [metric_row(benchmark, flavor, metric, None, None, 0), unjudged]
    return mean_rows(benchmark, flavor, metric, scored, **kwargs) + [unjudged]


def count_rows(benchmark: str, flavor: str, rows: list[dict]) -> list[dict]:
    """``errors`` and ``unparsed`` counts (value = count, n = number of rows)."""
    errors = sum(1 for r in rows if has_error(r))
    unparsed = sum(1 for r in rows if not has_error(r) and r.get("extracted") in (None, ""))
    return [metric_row(benchmark, flavor, "errors", None, errors, len(rows)),
            metric_row(benchmark, flavor, "unparsed", None, unparsed, len(rows))]


def meta_field(name: str) -> Callable[[dict], Any]:
    """A grouping key reading ``row["meta"][name]`` (rows must be decoded)."""
    return lambda r: (r.get("meta") or {}).get(name)
