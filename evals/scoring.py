"""Re-scoring a finished run from its saved predictions, without touching a model.

A run directory holds ``predictions/*.parquet`` — one row per sample with the record fields
(``sample_id, benchmark, split, question, options, targets, category, subcategory, group, meta``) plus
``prediction``, ``extracted``, ``score``, ``error``. :func:`rescore` re-runs
``benchmark.score`` + ``benchmark.aggregate`` for one flavor and writes ``metrics.parquet``
(``benchmark, flavor, metric, category, value, n``), replacing the rows of that flavor and keeping the
others, so one run can carry official, lmms-eval and VLMEvalKit numbers side by side.

If a sample appears more than once (a resumed run appended it again) the last row wins, files being
read in name order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from evals.aggregate import has_error
from evals.flavors import check_flavor
from evals.registry import get_benchmark

PREDICTIONS_DIR = "predictions"
METRICS_FILE = "metrics.parquet"
REQUIRED_COLUMNS = ("sample_id", "benchmark", "split", "question", "options", "targets", "category", "subcategory",
                    "group", "meta", "prediction")
METRICS_SCHEMA = pa.schema([("benchmark", pa.string()), ("flavor", pa.string()), ("metric", pa.string()),
                            ("category", pa.string()), ("value", pa.float64()), ("n", pa.int64())])


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_predictions(out_dir) -> list[dict]:
    """All prediction rows of a run (deduplicated by benchmark/split/sample_id, last wins)."""
    folder = Path(out_dir) / PREDICTIONS_DIR
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no prediction files: expected {folder}/*.parquet")
    rows: dict[tuple, dict] = {}
    for file in files:
        table = pq.read_table(file)
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{file}: missing column(s) {missing}; has {table.column_names}")
        for row in table.to_pylist():
            row = {k: _clean(v) for k, v in row.items()}
            rows[(row["benchmark"], row.get("split"), str(row["sample_id"]))] = row
    return list(rows.values())


def score_rows(rows: Iterable[dict], flavor: str) -> list[dict]:
    """Copies of the rows with ``extracted`` and ``score`` recomputed by their benchmark for ``flavor``.

    Rows with an ``error`` keep ``extracted=None`` and ``score=None`` (aggregation counts them as failures).
    """
    check_flavor(flavor)
    out = []
    for row in rows:
        row = dict(row)
        if has_error(row):
            row["extracted"], row["score"] = None, None
        else:
            bench = get_benchmark(row["benchmark"])
            row["extracted"], row["score"] = bench.score(row, row.get("prediction") or "", flavor)
        out.append(row)
    return out


def aggregate_rows(rows: list[dict], flavor: str) -> list[dict]:
    """Metric rows of every benchmark present in ``rows`` (rows already scored for ``flavor``)."""
    check_flavor(flavor)
    by_benchmark: dict[str, list[dict]] = {}
    for row in rows:
        by_benchmark.setdefault(row["benchmark"], []).append(row)
    metrics = []
    for name in sorted(by_benchmark):
        metrics.extend(get_benchmark(name).aggregate(by_benchmark[name], flavor))
    return metrics


def write_metrics(out_dir, metrics: list[dict], flavor: str) -> Path:
    """Write ``metrics.parquet``: the given rows replace the rows of ``flavor``, other flavors are kept."""
    path = Path(out_dir) / METRICS_FILE
    kept = []
    if path.is_file():
        kept = [r for r in pq.read_table(path).to_pylist() if r.get("flavor") != flavor]
    table = pa.Table.from_pylist([{k: r.get(k) for k in METRICS_SCHEMA.names} for r in kept + metrics],
                                 schema=METRICS_SCHEMA)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def rescore(out_dir, flavor: str = "official") -> list[dict]:
    """Recompute the metrics of a finished run for ``flavor`` and write ``out_dir/metrics.parquet``."""
    check_flavor(flavor)
    rows = score_rows(read_predictions(out_dir), flavor)
    metrics = aggregate_rows(rows, flavor)
    write_metrics(out_dir, metrics, flavor)
    return metrics
