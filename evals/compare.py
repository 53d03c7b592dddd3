"""Two or more runs of the same benchmarks, compared sample by sample: differences, intervals, tests, flips.

Pure: prediction rows in (as :func:`evals.scoring.read_predictions` gives them, one list per run), two tables out.
``ernie-vl compare RUN_A RUN_B [RUN_C ...] --out DIR`` (``pipelines.compare_runs``) reads the runs, refuses runs
whose input-changing fingerprint parts differ, and writes them as ``DIR/compare.parquet`` and ``DIR/flips.parquet``.

**Pairing.** Every pair of runs in the order given (A before B: ``(1, 2), (1, 3), (2, 3)``); per benchmark and flavor
(a row's ``flavor``, ``official`` when absent) present in both, the samples of both runs matched by
``(split, sample_id)``. Only matched samples are compared: each value is the benchmark's own ``aggregate`` over them
(so it may differ from a run's ``metrics.parquet`` when one run has samples the other lacks; ``unmatched_a`` /
``unmatched_b`` count those). A matched sample whose question, options or targets differ between the runs stops the
comparison (:class:`InputMismatch`): the runs did not answer the same questions.

**compare.parquet** (:data:`COMPARE_COLUMNS`, tidy): one row per run pair × benchmark × flavor × metric × category
(the rows of the benchmark's metrics table but its counts), ``diff = value_b − value_a``, and

* ``ci_low`` / ``ci_high`` — 95 % percentile interval of the difference from a *paired* bootstrap: the same units
  (:meth:`Benchmark.resampling_unit`: sample, or MMBench circular group, MME image, Video-MME video...) drawn for
  both runs; for a mean, or a value a benchmark computes from per-unit sums (POPE, MME), vectorised over those sums
  (:data:`~evals.bootstrap.RESAMPLES` draws), for any other value by running ``aggregate`` on both resampled runs
  (:func:`~evals.bootstrap.generic_resamples` draws);
* ``p_value`` and ``test`` — ``mcnemar_exact``: McNemar's exact test (binomial, two-sided:
  ``min(1, 2·P(X ≤ min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``) test on the discordant members, for a mean of 0/1 scores over the same members
  in both runs, one member per unit (computed exactly at every size: no chi-square or mid-p approximation);
  ``permutation``: a paired permutation test (each unit's two runs swapped with probability 1/2,
  ``p = (1 + #{|d*| ≥ |d|}) / (1 + permutations)``) for any other value — partial scores (ANLS), grouped units
  (Video-MME's questions per video), or a value that is not a mean (F1, acc+);
* ``flips_to_right`` / ``flips_to_wrong`` — samples the value speaks for that are wrong in A and right in B / right
  in A and wrong in B, "right" being a full score (``score >= 1``; an error row is wrong), as the report's sample
  browser counts it. The samples a value speaks for: for a mean, the rows of its members' units; otherwise all
  rows (overall value) or the rows of its ``category``; null when that is not known (``*_by_<field>`` of a value
  that is not a mean).

**flips.parquet** (:data:`FLIP_COLUMNS`): one row per flipped sample per run pair × benchmark × flavor, with its
ids, ``flip`` (``to_right`` / ``to_wrong``), both scores and both extracted answers.

Seeds: each compared value draws from its own generator (:func:`evals.bootstrap.rng_for` with
:data:`evals.bootstrap.SEED` and the value's name), so the same runs always give the same table.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from evals.aggregate import COUNT_METRICS, MeanTrace, SumTrace, decode_rows, is_right, row_score, trace_values
from evals.bootstrap import (RESAMPLES, SEED, MeanParts, covered_rows, draw_sums, generic_resamples, mean_parts,
                             member_key, metric_key, percentile_interval, ratio, resample_rows, rng_for, sum_value,
                             unit_rows)
from evals.registry import get_benchmark

DEFAULT_FLAVOR = "official"
COMPARE_FILE = "compare.parquet"
FLIPS_FILE = "flips.parquet"
FLIP_TO_RIGHT, FLIP_TO_WRONG = "to_right", "to_wrong"

# (name, type, description): the columns of compare.parquet, in this order.
COMPARE_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("benchmark", pa.string(), "benchmark registry name"),
    ("flavor", pa.string(), "scoring convention of both runs' rows"),
    ("metric", pa.string(), "metric name, as in metrics.parquet"),
    ("category", pa.string(), "null for the overall value, else the category it is restricted to"),
    ("run_a", pa.string(), "run A (the earlier of the pair on the command line), as given"),
    ("run_b", pa.string(), "run B"),
    ("value_a", pa.float64(), "the metric of run A over the matched samples"),
    ("value_b", pa.float64(), "the metric of run B over the matched samples"),
    ("diff", pa.float64(), "value_b - value_a"),
    ("ci_low", pa.float64(), "95 % paired-bootstrap interval of diff, low end (null: not enough units)"),
    ("ci_high", pa.float64(), "95 % paired-bootstrap interval of diff, high end"),
    ("p_value", pa.float64(), "two-sided p-value of 'no difference' (see test)"),
    ("test", pa.string(), "mcnemar_exact (0/1 scores, one member per unit) or permutation (paired, by unit)"),
    ("n", pa.int64(), "samples value_a is computed over (run A's n)"),
    ("n_b", pa.int64(), "samples value_b is computed over (differs from n where a metric counts some rows only)"),
    ("units", pa.int64(), "resampling units drawn (samples, or the benchmark's groups)"),
    ("resamples", pa.int64(), "bootstrap resamples behind ci_low / ci_high"),
    ("permutations", pa.int64(), "permutations behind a permutation p_value (null for mcnemar_exact)"),
    ("discordant_b", pa.int64(), "McNemar: members right in A only (null for a permutation test)"),
    ("discordant_c", pa.int64(), "McNemar: members right in B only"),
    ("flips_to_right", pa.int64(), "samples wrong in A and right in B (null: samples not known)"),
    ("flips_to_wrong", pa.int64(), "samples right in A and wrong in B"),
    ("unmatched_a", pa.int64(), "samples of this benchmark and flavor in run A only (left out)"),
    ("unmatched_b", pa.int64(), "samples of this benchmark and flavor in run B only (left out)"),
]
COMPARE_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COMPARE_COLUMNS])

# (name, type, description): the columns of flips.parquet, in this order.
FLIP_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("run_a", pa.string(), "run A, as given"),
    ("run_b", pa.string(), "run B, as given"),
    ("benchmark", pa.string(), "benchmark registry name"),
    ("flavor", pa.string(), "scoring convention"),
    ("split", pa.string(), "split name"),
    ("sample_id", pa.string(), "sample id (with benchmark and split: the row in each run's predictions)"),
    ("category", pa.string(), "the sample's category"),
    ("flip", pa.string(), "to_right (wrong in A, right in B) or to_wrong (right in A, wrong in B)"),
    ("score_a", pa.float64(), "run A's per-sample score (an error row scores 0)"),
    ("score_b", pa.float64(), "run B's per-sample score"),
    ("extracted_a", pa.string(), "run A's extracted answer"),
    ("extracted_b", pa.string(), "run B's extracted answer"),
    ("target", pa.string(), "accepted answers joined with ' | '"),
]
FLIPS_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in FLIP_COLUMNS])


class InputMismatch(ValueError):
    """Matched samples of two runs whose inputs differ (question, options or targets)."""


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs: ``min(1, 2·P(X ≤ min(b, c)))``,
    ``X ~ Binomial(b + c, 1/2)`` (summed in log space: exact to rounding at any size)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, 2.0 * math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def permutation_p(observed: float, permuted: np.ndarray) -> float | None:
    """Two-sided p-value of ``observed`` among the finite ``permuted`` differences (None without any)."""
    finite = permuted[np.isfinite(permuted)]
    if finite.size == 0:
        return None
    extreme = int(np.count_nonzero(np.abs(finite) >= abs(observed) - 1e-9 * max(1.0, abs(observed))))
    return (1 + extreme) / (1 + finite.size)


def compare_runs(runs: dict[str, list[dict]], *, seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """``(compare rows, flip rows)`` for every pair of ``runs`` (``{name: prediction rows}``, pairs in that order)."""
    names = list(runs)
    if len(names) < 2:
        raise ValueError(f"compare needs at least two runs, got {len(names)}")
    by_run = {name: _by_benchmark(rows) for name, rows in runs.items()}
    compared, flips = [], []
    for i, name_a in enumerate(names):
        for name_b in names[i + 1:]:
            common = sorted(set(by_run[name_a]) & set(by_run[name_b]))
            for bench_name, flavor in common:
                rows, flipped = compare_benchmark(bench_name, flavor, by_run[name_a][bench_name, flavor],
                                                  by_run[name_b][bench_name, flavor], seed=seed)
                compared += [dict(r, run_a=name_a, run_b=name_b) for r in rows]
                flips += [dict(r, run_a=name_a, run_b=name_b) for r in flipped]
    return compared, flips


def compare_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in COMPARE_SCHEMA.names}, schema=COMPARE_SCHEMA)


def flips_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in FLIPS_SCHEMA.names}, schema=FLIPS_SCHEMA)


def _by_benchmark(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        out.setdefault((row["benchmark"], row.get("flavor") or DEFAULT_FLAVOR), []).append(row)
    return out


def _sample_key(row: dict) -> tuple[str, str]:
    return str(row.get("split") or ""), str(row["sample_id"])


def _matched(bench_name: str, flavor: str, rows_a: list[dict], rows_b: list[dict]):
    by_b = {_sample_key(r): r for r in rows_b}
    keys_a = {_sample_key(r) for r in rows_a}
    a = decode_rows([r for r in rows_a if _sample_key(r) in by_b])
    b = decode_rows([by_b[_sample_key(r)] for r in a])
    differ = [(x, y) for x, y in zip(a, b) if any(x.get(f) != y.get(f) for f in ("question", "options", "targets"))]
    if differ:
        x, y = differ[0]
        field = next(f for f in ("question", "options", "targets") if x.get(f) != y.get(f))
        raise InputMismatch(f"{bench_name} [{flavor}]: {len(differ)} matched sample(s) have other inputs in the two "
                            f"runs, e.g. {x['sample_id']!r} {field}: {x.get(field)!r} vs {y.get(field)!r} — not the "
                            "same questions (another dataset file or version?)")
    return a, b, len(rows_a) - len(a), len(by_b.keys() - keys_a)


def compare_benchmark(bench_name: str, flavor: str, rows_a: list[dict], rows_b: list[dict], *,
                      seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """Compare rows (without ``run_a``/``run_b``) and flip rows of one benchmark and flavor of two runs."""
    bench = get_benchmark(bench_name)
    a, b, only_a, only_b = _matched(bench_name, flavor, rows_a, rows_b)
    base = {"benchmark": bench_name, "flavor": flavor, "unmatched_a": only_a, "unmatched_b": only_b}
    flips = _flips(bench_name, flavor, a, b)
    if not a:
        return [], flips
    with trace_values() as traces_a:
        metrics_a = bench.aggregate(a, flavor)
    with trace_values() as traces_b:
        metrics_b = bench.aggregate(b, flavor)
    trace_a, trace_b = ({id(t.row): t for t in ts} for ts in (traces_a, traces_b))
    values_b = {metric_key(m): m for m in metrics_b}
    out, generic, shared = [], [], {}
    for ma in metrics_a:
        mb = values_b.get(metric_key(ma))
        if ma["metric"] in COUNT_METRICS or mb is None or ma["value"] is None or mb["value"] is None:
            continue
        row = dict(base, metric=ma["metric"], category=ma["category"], value_a=ma["value"], value_b=mb["value"],
                   diff=mb["value"] - ma["value"], n=ma["n"], n_b=mb["n"])
        ta, tb = trace_a.get(id(ma)), trace_b.get(id(mb))
        rng = rng_for(seed, bench_name, flavor, *metric_key(ma))
        if isinstance(ta, MeanTrace) and isinstance(tb, MeanTrace) and _is_value(
                pa_ := mean_parts(bench, ta), ma) and _is_value(pb_ := mean_parts(bench, tb), mb):
            _paired_mean(row, bench, pa_, pb_, a, b, rng)
        elif (isinstance(ta, SumTrace) and isinstance(tb, SumTrace) and ta.stats_UK.shape[1] == tb.stats_UK.shape[1]
              and _close(sum_value(ta), ma["value"]) and _close(sum_value(tb), mb["value"])):
            _paired_sums(row, ta, tb, a, b, rng, shared)
        else:
            generic.append(row)
        out.append(row)
    if generic:
        _paired_generic(generic, bench, flavor, a, b, seed)
    return out, flips


def _close(value: float, reported: float) -> bool:
    return math.isclose(value, reported, rel_tol=1e-9, abs_tol=1e-9)


def _is_value(parts: MeanParts, metric: dict) -> bool:
    return _close(parts.value, metric["value"])


def _flip(ra: dict, rb: dict) -> str | None:
    right_a, right_b = is_right(ra), is_right(rb)
    return None if right_a == right_b else (FLIP_TO_RIGHT if right_b else FLIP_TO_WRONG)


def _count_flips(row: dict, pairs: list[tuple[dict, dict]] | None) -> None:
    if pairs is None:
        row.update(flips_to_right=None, flips_to_wrong=None)
        return
    kinds = [_flip(ra, rb) for ra, rb in pairs]
    row.update(flips_to_right=kinds.count(FLIP_TO_RIGHT), flips_to_wrong=kinds.count(FLIP_TO_WRONG))


def _flips(bench_name: str, flavor: str, a: list[dict], b: list[dict]) -> list[dict]:
    out = []
    for ra, rb in zip(a, b):
        kind = _flip(ra, rb)
        if kind is not None:
            out.append({"benchmark": bench_name, "flavor": flavor, "split": ra.get("split"),
                        "sample_id": str(ra["sample_id"]), "category": ra.get("category"), "flip": kind,
                        "score_a": row_score(ra), "score_b": row_score(rb), "extracted_a": ra.get("extracted"),
                        "extracted_b": rb.get("extracted"), "target": " | ".join(ra.get("targets") or [])})
    return out


def _aligned(units_a: list[str], stats_a: np.ndarray, units_b: list[str], stats_b: np.ndarray):
    """Both runs' per-unit stats over the union of their units (a unit one run lacks: zeros)."""
    units = sorted(set(units_a) | set(units_b))
    index = {u: i for i, u in enumerate(units)}
    out_a, out_b = np.zeros((len(units), stats_a.shape[1])), np.zeros((len(units), stats_b.shape[1]))
    out_a[[index[u] for u in units_a]] = stats_a
    out_b[[index[u] for u in units_b]] = stats_b
    return units, out_a, out_b


def _paired_draws(row: dict, stats_a: np.ndarray, stats_b: np.ndarray, value_a, value_b, rng, *,
                  test: bool = True, cache: dict | None = None) -> None:
    """Paired bootstrap interval of ``value_b(sums) - value_a(sums)`` over units drawn for both runs at once, and
    (``test``) its permutation p-value: each unit's two runs swapped with probability 1/2. ``stats_*``: ``[U, K]``
    per-unit sums of each run; ``value_*``: ``[B, K]`` sums -> ``[B]`` values. Rows of one ``cache`` (the values of
    one benchmark computed from the same sums, e.g. POPE's) share their draws."""
    U, K = stats_a.shape
    row["units"] = U
    if U < 2:
        return
    cache = {} if cache is None else cache
    if "boot" not in cache:
        cache["boot"] = draw_sums(np.concatenate([stats_a, stats_b], axis=1), RESAMPLES, rng)
    sums = cache["boot"]
    interval = percentile_interval(value_b(sums[:, K:]) - value_a(sums[:, :K]))
    if interval is not None:
        row.update(ci_low=interval[0], ci_high=interval[1], resamples=RESAMPLES)
    if not test:
        return
    if "perm" not in cache:
        sides = np.empty((RESAMPLES, 2 * K))
        delta_UK = stats_b - stats_a  # what a swap moves from run A's side to run B's
        total_a, total_b = stats_a.sum(axis=0), stats_b.sum(axis=0)
        step = max(1, (1 << 20) // U)
        for start in range(0, RESAMPLES, step):
            swap_pU = (rng.random((min(step, RESAMPLES - start), U)) < 0.5).astype(np.float64)
            moved_pK = swap_pU @ delta_UK
            sides[start:start + len(swap_pU)] = np.concatenate([total_a + moved_pK, total_b - moved_pK], axis=1)
        cache["perm"] = sides
    sides = cache["perm"]
    permuted = value_b(sides[:, K:]) - value_a(sides[:, :K])
    row.update(test="permutation", p_value=permutation_p(row["diff"], permuted), permutations=RESAMPLES)


def _paired_mean(row: dict, bench, pa_: MeanParts, pb_: MeanParts, a: list[dict], b: list[dict], rng) -> None:
    """A mean metric: paired bootstrap over per-unit sums; McNemar's exact test where it applies, else permutation."""
    units, stats_a, stats_b = _aligned(pa_.units, np.stack([pa_.sums, pa_.counts], axis=1),
                                       pb_.units, np.stack([pb_.sums, pb_.counts], axis=1))
    keys = set(pa_.keys) | set(pb_.keys)  # samples, or (MMBench) the circular groups whose rows they stand for
    _count_flips(row, [(ra, rb) for ra, rb in zip(a, b)
                       if member_key(ra) in keys or bench.resampling_unit(ra) in keys])
    scores_a, scores_b = dict(zip(pa_.keys, pa_.scores)), dict(zip(pb_.keys, pb_.scores))
    mcnemar = (all(s in (0.0, 1.0) for s in (*pa_.scores, *pb_.scores)) and scores_a.keys() == scores_b.keys()
               and len(scores_a) == len(units) == len(pa_.keys) == len(pb_.keys))
    value = lambda sums: pa_.scale * ratio(sums[:, 0], sums[:, 1])  # noqa: E731
    _paired_draws(row, stats_a, stats_b, value, value, rng, test=not mcnemar)
    if mcnemar:  # 0/1 scores, the same members, one member per unit: McNemar's exact test on the discordant ones
        b_, c_ = (sum(1 for k, s in scores_a.items() if s > scores_b[k]),
                  sum(1 for k, s in scores_a.items() if s < scores_b[k]))
        row.update(test="mcnemar_exact", p_value=mcnemar_exact(b_, c_), discordant_b=b_, discordant_c=c_)


def _paired_sums(row: dict, ta: SumTrace, tb: SumTrace, a: list[dict], b: list[dict], rng, cache: dict) -> None:
    """A value computed from per-unit sums (POPE, MME): paired bootstrap and permutation test over those sums."""
    key = (id(ta.stats_UK), id(tb.stats_UK))
    if key not in cache:
        cache[key] = {"stats": _aligned(ta.units, ta.stats_UK, tb.units, tb.stats_UK)}
    _, stats_a, stats_b = cache[key]["stats"]
    covered = covered_rows(a, row["category"])
    by_id = {id(ra): rb for ra, rb in zip(a, b)}
    _count_flips(row, None if covered is None else [(ra, by_id[id(ra)]) for ra in covered])
    _paired_draws(row, stats_a, stats_b, ta.combine, tb.combine, rng, cache=cache[key])


def _paired_generic(rows: list[dict], bench, flavor: str, a: list[dict], b: list[dict], seed: int) -> None:
    """Paired bootstrap and permutation test of values that are not means: ``aggregate`` on both runs' resamples."""
    _, units_a = unit_rows(bench, a)
    by_id = {id(ra): rb for ra, rb in zip(a, b)}
    units_b = [[by_id[id(ra)] for ra in unit] for unit in units_a]
    for row in rows:
        covered = covered_rows(a, row["category"])
        _count_flips(row, None if covered is None else [(ra, by_id[id(ra)]) for ra in covered])
        row["units"] = len(units_a)
    U = len(units_a)
    if U < 2:
        return
    draws = generic_resamples(4 * len(a))  # four aggregate calls per draw (two resampled runs, two permuted)
    rng = rng_for(seed, bench.name, flavor, "paired-generic")
    boot_BR, perm_BR = np.full((draws, len(rows)), np.nan), np.full((draws, len(rows)), np.nan)
    for k in range(draws):
        pick = rng.integers(0, U, U)
        boot_BR[k] = _diffs(bench, flavor, rows, resample_rows(bench, units_a, pick),
                            resample_rows(bench, units_b, pick))
        swap = rng.random(U) < 0.5
        side_a = [r for u in range(U) for r in (units_b[u] if swap[u] else units_a[u])]
        side_b = [r for u in range(U) for r in (units_a[u] if swap[u] else units_b[u])]
        perm_BR[k] = _diffs(bench, flavor, rows, side_a, side_b)
    for j, row in enumerate(rows):
        interval = percentile_interval(boot_BR[:, j])
        if interval is not None:
            row.update(ci_low=interval[0], ci_high=interval[1], resamples=draws)
        row.update(test="permutation", p_value=permutation_p(row["diff"], perm_BR[:, j]), permutations=draws)


def _diffs(bench, flavor: str, rows: list[dict], side_a: list[dict], side_b: list[dict]) -> list[float]:
    got_a = {metric_key(m): m["value"] for m in bench.aggregate(side_a, flavor)}
    got_b = {metric_key(m): m["value"] for m in bench.aggregate(side_b, flavor)}
    out = []
    for row in rows:
        va, vb = got_a.get(metric_key(row)), got_b.get(metric_key(row))
        out.append(np.nan if va is None or vb is None else vb - va)
    return out
