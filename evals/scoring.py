"""The one metrics path of a run: saved predictions → metric rows → ``metrics.parquet``.

A run directory holds ``predictions/*.parquet`` — one row per sample with the record fields
(``sample_id, benchmark, split, question, options, targets, category, subcategory, group, meta``) plus
``prediction``, ``extracted``, ``score``, ``error`` and, from the pipeline, ``flavor``. ``metrics.parquet`` has the
columns of :data:`evals.aggregate.METRIC_COLUMNS` (``benchmark, flavor, metric, category, value, n`` and the value's
uncertainty: ``stderr, ci_low, ci_high, ...`` from :func:`evals.bootstrap.with_uncertainty`).

Two entry points share one reader (:func:`read_predictions`), one aggregation (:func:`aggregate_rows`, i.e.
``benchmark.aggregate`` per benchmark and flavor) and one writer (:func:`write_metrics`):

* :func:`compute_metrics` — the pipeline, at the end of a run: the scores as saved, per benchmark and per the
  flavor each row was scored with (its ``flavor``; ``official`` when absent); the pipeline then writes the
  whole table.
* :func:`rescore` — ``ernie-vl score``: re-runs ``benchmark.score`` for one flavor (a judge for the judge-scored
  benchmarks when given), saves the scores into that flavor's prediction rows, then replaces the rows of that
  flavor in ``metrics.parquet`` and keeps the others, so one run can carry official, lmms-eval and VLMEvalKit
  numbers side by side.

For the same predictions, rescoring with the flavor they were scored with gives the pipeline's table.

If a sample appears more than once (a resumed run appended it again) the last row wins, files being
read in name order.

Judge-scored benchmarks (``Benchmark.judged``: MathVista, MM-Vet, CharXiv) go through the same path: given a
:class:`evals.judge.Judge`, :func:`score_rows` asks it what the benchmark's ``judge_prompt`` says (replies come from
the run's cache ``OUT/judge_cache/`` when it has them) and scores the reply with ``score_judged``; without a judge,
or for a prompt the judge did not answer, the benchmark's rule (``score``) scores the row. Every scored row says how
in its ``judge`` column: the judge model whose reply gave ``extracted``/``score``, or ``"rule"``.

Where the scores land: :func:`save_scores` writes ``extracted``, ``score`` and ``judge`` back into the prediction
files, for the rows whose saved ``flavor`` is the flavor scored (a rescore for another flavor changes only the
metrics). Nothing is lost: the model's answer (``prediction``) is never touched, the judge's replies stay in the
cache, and rescoring with or without the judge recomputes either set of scores (from the cache: no new request).
:func:`score_saved` is the pipeline's end-of-run step for the judge-scored benchmarks of a run.
"""

from __future__ import annotations

import math
from typing import Iterable

import pyarrow as pa

from evals.aggregate import has_error, metrics_table
from evals.bootstrap import with_uncertainty
from evals.flavors import check_flavor
from evals.judge import JudgeStats
from evals.registry import get_benchmark
from evals.storage import TMP_PREFIX, Storage

PREDICTIONS_DIR = "predictions"
METRICS_FILE = "metrics.parquet"
DEFAULT_FLAVOR = "official"  # rows without a ``flavor`` column were scored with it
RULE = "rule"  # the ``judge`` value of rows scored by the benchmark's own rule
SCORE_COLUMNS = (("extracted", pa.string()), ("score", pa.float64()), ("judge", pa.string()))
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


def score_rows(rows: Iterable[dict], flavor: str | None = None, judge=None) -> list[dict]:
    """Copies of the rows with ``extracted``, ``score`` and ``judge`` recomputed by their benchmark.

    ``flavor``: score every row for it; None: each row for its own ``flavor`` (``official`` when absent).
    ``judge``: an :class:`evals.judge.Judge` for the judge-scored benchmarks (None: their rule). Rows with an
    ``error`` keep ``extracted=None``, ``score=None``, ``judge=None`` (aggregation counts them as failures).
    """
    if flavor is not None:
        check_flavor(flavor)
    out: list[dict] = []
    asks: dict[str, list[tuple[int, str, str]]] = {}  # benchmark -> (row index, prompt, flavor)
    for row in rows:
        row = dict(row)
        fl = flavor or row.get("flavor") or DEFAULT_FLAVOR
        if has_error(row):
            row["extracted"], row["score"], row["judge"] = None, None, None
        else:
            bench = get_benchmark(row["benchmark"])
            prompt = None
            if judge is not None and bench.judged:
                prompt = bench.judge_prompt(row, row.get("prediction") or "", check_flavor(fl))
            if prompt is None:
                _rule_score(row, bench, fl, judge)
            else:
                asks.setdefault(bench.name, []).append((len(out), prompt, fl))
        out.append(row)
    for name, items in asks.items():
        bench = get_benchmark(name)
        replies = judge.ask(name, [prompt for _, prompt, _ in items], bench.judge_max_tokens)
        for i, prompt, fl in items:
            row, reply = out[i], replies.get(prompt)
            if reply is None:
                _rule_score(row, bench, fl, judge)
                continue
            extracted, score = bench.score_judged(row, row.get("prediction") or "", reply, fl)
            row["extracted"], row["score"], row["judge"] = _cell(extracted), _number(score), judge.model
            judge.stats[name].rows["judged"] += 1
    return out


def _rule_score(row: dict, bench, flavor: str, judge) -> None:
    extracted, score = bench.score(row, row.get("prediction") or "", flavor)
    row["extracted"], row["score"], row["judge"] = _cell(extracted), _number(score), RULE
    if judge is not None and bench.judged:
        judge.stats.setdefault(bench.name, JudgeStats()).rows["rule"] += 1


def _cell(extracted) -> str | None:  # as the pipeline's ScoreStage stores them
    return None if extracted is None else str(extracted)


def _number(score) -> float | None:
    return None if score is None else float(score)


def save_scores(out_dir, rows: list[dict], flavor: str | None = None) -> int:
    """Write the rows' ``extracted``, ``score`` and ``judge`` into the prediction files that hold them, for rows whose
    saved ``flavor`` is ``flavor`` (None: every row). Files whose values are unchanged are left alone; a changed
    file is rewritten whole under a temporary name and renamed (its other columns, order and metadata kept; a
    ``judge`` column is added to files written before it existed). Returns the number of files rewritten."""
    scored = {_key(r): r for r in rows if flavor is None or (r.get("flavor") or DEFAULT_FLAVOR) == flavor}
    if not scored:
        return 0
    rewritten = 0
    folder = Storage.at(out_dir).child(PREDICTIONS_DIR)
    for file in _prediction_files(folder):
        table = folder.read_table(file)
        saved = table.select([c for c in ("benchmark", "split", "sample_id", "flavor") if c in table.column_names])
        values = {name: (table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows)
                  for name, _ in SCORE_COLUMNS}
        changed = False
        for i, row in enumerate(saved.to_pylist()):
            new = scored.get(_key(row))
            if new is None or (flavor is not None and (row.get("flavor") or DEFAULT_FLAVOR) != flavor):
                continue
            for name, _ in SCORE_COLUMNS:
                if not _same(values[name][i], new.get(name)):
                    values[name][i], changed = new.get(name), True
        if not changed:
            continue
        for name, dtype in SCORE_COLUMNS:
            column = pa.array(values[name], type=dtype)
            if name in table.column_names:
                index = table.column_names.index(name)
                table = table.set_column(index, pa.field(name, dtype), column)
            else:
                table = table.append_column(pa.field(name, dtype), column)
        folder.write_table(file, table)  # complete or absent (evals.storage), local folder or object store
        rewritten += 1
    return rewritten


def _key(row: dict) -> tuple:
    return row["benchmark"], row.get("split"), str(row["sample_id"])


def _same(a, b) -> bool:
    return _clean(a) == _clean(b)  # NaN and None are both "no score"


def aggregate_rows(rows: list[dict], flavor: str | None = None) -> list[dict]:
    """Metric rows of every benchmark present in ``rows`` (sorted by benchmark, then flavor), each with its standard
    error and 95 % interval (:func:`evals.bootstrap.with_uncertainty`).

    ``flavor``: every row was scored for it; None: each row for its own ``flavor`` (``official`` when absent)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        fl = flavor or row.get("flavor") or DEFAULT_FLAVOR
        groups.setdefault((row["benchmark"], fl), []).append(row)
    metrics = []
    for name, fl in sorted(groups):
        check_flavor(fl)
        metrics.extend(with_uncertainty(get_benchmark(name), groups[name, fl], fl))
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
        # every column read: a table written before the uncertainty columns existed keeps them null
        kept = [r for r in store.read_table(METRICS_FILE).to_pylist() if r.get("flavor") != flavor]
    store.write_table(METRICS_FILE, metrics_table(kept + metrics))
    return store.display(METRICS_FILE)


def rescore(out_dir, flavor: str = DEFAULT_FLAVOR, judge=None) -> list[dict]:
    """Recompute the scores of a finished run for ``flavor`` (judge-scored benchmarks with ``judge`` when given),
    save them into the prediction rows of that flavor, and write ``out_dir/metrics.parquet``."""
    check_flavor(flavor)
    rows = score_rows(read_predictions(out_dir), flavor, judge)
    save_scores(out_dir, rows, flavor)
    metrics = aggregate_rows(rows, flavor)
    write_metrics(out_dir, metrics, flavor)
    return metrics


def score_saved(out_dir, benchmarks: Iterable[str], judge=None) -> int:
    """The pipeline's end-of-run scoring of its judge-scored ``benchmarks``: each saved row rescored for its own
    flavor (with ``judge``, or by rule without one) and saved back; returns the rows scored. Other benchmarks keep
    the scores the pipeline saved."""
    names = {n for n in benchmarks if get_benchmark(n).judged}
    if not names:
        return 0
    rows = [r for r in read_predictions(out_dir, missing_ok=True) if r["benchmark"] in names]
    if not rows:
        return 0
    scored = score_rows(rows, None, judge)
    save_scores(out_dir, scored)
    return len(scored)


def scoring_record(benchmark: str, judge=None) -> dict:
    """How ``benchmark``'s rows were scored, for the manifest: ``{"method": "rule"}`` or ``{"method": "judge",
    "judge_model", "judge_url", "asked", "cached", "failed", "rows_judged", "rows_rule"[, "error"]}``."""
    if judge is None or not get_benchmark(benchmark).judged:
        return {"method": RULE}
    return {"method": "judge", **judge.record(benchmark)}
