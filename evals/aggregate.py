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
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Iterable

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
]
METRIC_NAMES = [n for n, _, _ in METRIC_COLUMNS]
METRICS_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in METRIC_COLUMNS])


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


def metric_row(benchmark: str, flavor: str, metric: str, category: str | None, value: float | None, n: int) -> dict:
    return dict(zip(METRIC_NAMES, (benchmark, flavor, metric, category, None if value is None else float(value),
                                   int(n))))


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
        out.append(metric_row(benchmark, flavor, metric, None, scale * sum(map(score, rows)) / len(rows), len(rows)))
    groupings = {"": lambda r: r.get("category")}
    groupings.update(by or {})
    for suffix, key in groupings.items():
        name = metric if not suffix else f"{metric}_by_{suffix}"
        for value, members in group_by(rows, key).items():
            out.append(metric_row(benchmark, flavor, name, str(value), scale * sum(map(score, members)) / len(members), len(members)))
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
