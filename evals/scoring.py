"""The one metrics path of a run: saved predictions → metric rows → ``metrics.parquet``.

A run directory holds ``predictions/*.parquet`` — one row per sample with the record fields
(``sample_id, benchmark, split, question, options, targets, category, subcategory, group, meta``) plus
``prediction``, ``extracted``, ``score``, ``error`` and, from the pipeline, ``flavor``. ``metrics.parquet`` has the
columns of :data:`evals.aggregate.METRIC_COLUMNS` (``benchmark, flavor, metric, category, value, n``).

Two entry points share one reader (:func:`read_predictions`), one aggregation (:func:`aggregate_rows`, i.e.
``benchmark.aggregate`` per benchmark and flavor) and one writer (:func:`write_metrics`):

* :func:`compute_metrics` — the pipeline, at the end of a run: the scores as saved, per benchmark and per the
  flavor each row was scored with (its ``flavor``; ``official`` when absent); the pipeline then writes the
  whole table.
* :func:`rescore` — ``ernie-vl score``: re-runs ``benchmark.score`` for one flavor, then replaces the rows of that
  flavor in ``metrics.parquet`` and keeps the others, so one run can carry official, lmms-eval and VLMEvalKit
  numbers side by side.

For the same predictions, rescoring with the flavor they were scored with gives the pipeline's table.

If a sample appears more than once (a resumed run appended it again) the last row wins, files being
read in name order.
"""

from __future__ import annotations

import math
from typing import Iterable

from evals.aggregate import METRIC_NAMES, has_error, metrics_table
from evals.flavors import check_flavor
from evals.registry import get_benchmark
from evals.storage import TMP_PREFIX, Storage

PREDICTIONS_DIR = "predictions"
METRICS_FILE = "metrics.parquet"
DEFAULT_FLAVOR = "official"  # rows without a ``flavor`` column were scored with it
REQUIRED_COLUMNS = ("sample_id", "benchmark", "split", "question", "options", "targets", "category", "subcategory",
                    "group", "meta", "prediction")


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_predictions(out_dir, *, missing_ok: bool = False) -> list[dict]:
    """All prediction rows of a run (deduplicated by benchmark/split/sample_id, last wins). ``out_dir``, here and in
    every function of this module: a local folder, a URI (``s3://bucket/run``) or an :class:`evals.storage.Storage`.

    No prediction file raises FileNotFoundError, or gives ``[]`` with ``missing_ok`` (a run with nothing to do)."""
    folder = Storage.at(out_dir).child(PREDICTIONS_DIR)
    files = _prediction_files(folder)
    if not files:
        if missing_ok:
            return []
        raise FileNotFoundError(f"no prediction files: expected {folder}/*.parquet")
    rows: dict[tuple, dict] = {}
    for file in files:
        table = folder.read_table(file)
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{folder.display(file)}: missing column(s) {missing}; has {table.column_names}")
        for row in table.to_pylist():
            row = {k: _clean(v) for k, v in row.items()}
            rows[(row["benchmark"], row.get("split"), str(row["sample_id"]))] = row
    return list(rows.values())


def _prediction_files(folder: Storage) -> list[str]:
    """The ``*.parquet`` files of a predictions folder (no temporary files), in name order."""
    return [n for n in folder.files() if n.endswith(".parquet") and not n.startswith(TMP_PREFIX)]


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


def aggregate_rows(rows: list[dict], flavor: str | None = None) -> list[dict]:
    """Metric rows of every benchmark present in ``rows`` (sorted by benchmark, then flavor).

    ``flavor``: every row was scored for it; None: each row for its own ``flavor`` (``official`` when absent)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        fl = flavor or row.get("flavor") or DEFAULT_FLAVOR
        groups.setdefault((row["benchmark"], fl), []).append(row)
    metrics = []
    for name, fl in sorted(groups):
        check_flavor(fl)
        metrics.extend(get_benchmark(name).aggregate(groups[name, fl], fl))
    return metrics


def compute_metrics(out_dir) -> list[dict]:
    """Metric rows of a run from its predictions as saved (no rescoring), every flavor present; ``[]`` without
    predictions."""
    return aggregate_rows(read_predictions(out_dir, missing_ok=True))


def write_metrics(out_dir, metrics: list[dict], flavor: str | None = None) -> str:
    """Write ``metrics.parquet`` complete or not at all (:mod:`evals.storage`: a local folder or object storage):
    ``flavor`` given, ``metrics`` replace the rows of that flavor and the other flavors' rows are kept; None,
    ``metrics`` are the whole table. Returns where it was written."""
    store = Storage.at(out_dir)
    kept = []
    if flavor is not None and store.is_file(METRICS_FILE):
        kept = [r for r in store.read_table(METRICS_FILE, columns=METRIC_NAMES).to_pylist() if r.get("flavor") != flavor]
    store.write_table(METRICS_FILE, metrics_table(kept + metrics))
    return store.display(METRICS_FILE)


def rescore(out_dir, flavor: str = DEFAULT_FLAVOR) -> list[dict]:
    """Recompute the metrics of a finished run for ``flavor`` and write ``out_dir/metrics.parquet``."""
    check_flavor(flavor)
    rows = score_rows(read_predictions(out_dir), flavor)
    metrics = aggregate_rows(rows, flavor)
    write_metrics(out_dir, metrics, flavor)
    return metrics
