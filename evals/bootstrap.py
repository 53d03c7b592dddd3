"""Uncertainty of every metric value: a standard error and a 95 % interval, from the ``aggregate`` that made it.

A benchmark's metric is whatever its ``aggregate(rows, flavor)`` computes. Its interval comes from drawing the rows
again *by unit*, with replacement — :meth:`Benchmark.resampling_unit`: a sample, or the group whose rows are not
independent (MMBench circular group, MME image, Video-MME video, HallusionBench question set), so that rows which
succeed or fail together do not narrow the interval — and computing the value again. Three paths, one result:

* **mean** — a row made by :func:`evals.aggregate.mean_rows` (seen through :func:`~evals.aggregate.trace_values`) is
  ``scale · Σ scores / Σ members``. Its members are summed per unit once (``S_u``, ``N_u``) and :data:`RESAMPLES`
  draws of the units are summed with numpy (no Python per resample). ``stderr`` is analytic: the ratio estimator's
  cluster-robust (linearisation) standard error ``scale · sqrt(U/(U−1) · Σ_u (S_u − m·N_u)²) / Σ_u N_u``, the
  familiar ``s/√n`` when every unit holds one sample; the bootstrap's spread agrees with it (tested).
* **sums** — a row a benchmark reported with :func:`evals.aggregate.traced_sums` (POPE's accuracy/precision/recall/
  F1 from summed counts, MME's acc, acc+, scores and totals from per-image sums): :data:`RESAMPLES` draws of its
  per-unit sums, its own function applied to each; ``stderr`` is their standard deviation.
* **generic** — any other value (HallusionBench's aAcc/fAcc/qAcc, macro means, OCRBench's hit count...):
  ``aggregate`` runs on :func:`generic_resamples` resamples of all the benchmark's units (a unit drawn again goes
  through :meth:`Benchmark.resampled_copy`, so that it counts as one more unit) and ``stderr`` is the standard
  deviation of the values. This path costs one ``aggregate`` call per resample.

The interval is the percentile interval (2.5 %, 97.5 %) of the resampled values. A mean resamples the units of its
own members (a category's interval, that category's units); a sums or generic value resamples all units of the
benchmark (a category's size then varies between resamples, as it would between datasets).
Counts (:data:`~evals.aggregate.COUNT_METRICS`), null values and values over fewer than two units get none. Each
metric row draws from its own generator, seeded with :data:`SEED` and the row's name, so a run's other rows and
benchmarks do not change its interval (rows computed from the same sums share the first one's draws). Columns
filled: ``stderr, ci_low, ci_high, stderr_method, resamples, bootstrap_seed, unit, units``
(:data:`evals.aggregate.METRIC_COLUMNS`).

:mod:`evals.compare` pairs two runs with the same pieces (:func:`mean_parts`, :func:`draw_sums`,
:func:`unit_rows`, :func:`resample_rows`).

Cost, measured on the 2-core development machine for 10,000 rows (README, "Outputs"): means and sums well under a
second per benchmark; the generic path about 0.3 s per ``aggregate`` call on 10,000 rows, hence its fewer
resamples.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from evals.aggregate import COUNT_METRICS, MeanTrace, SumTrace, decode_rows, trace_values

SEED = 0
RESAMPLES = 1000  # mean path; the Monte Carlo error of the bootstrap's standard deviation is then ~1/sqrt(2B) = 2 %
CONFIDENCE = 0.95
_DRAWS_PER_BLOCK = 1 << 20  # unit draws per vectorised block (memory: 8 bytes x columns each)


def generic_resamples(n_rows: int) -> int:
    """Resamples of the generic path (one ``aggregate`` call each, some 30 µs a row on a 2-core machine):
    :data:`RESAMPLES` up to 200 rows, then fewer, so that the calls stay near 200,000 rows in all — never under 100
    (10,000 rows: 100 calls, about 30 s there)."""
    return max(100, min(RESAMPLES, 200_000 // max(n_rows, 1)))


def rng_for(seed: int, *names) -> np.random.Generator:
    """A generator of its own for the value ``names`` (benchmark, flavor, metric, category...) under ``seed``."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(map(str, names)).encode())])


def percentile_interval(values: np.ndarray) -> tuple[float, float] | None:
    """The central :data:`CONFIDENCE` percentile interval of the finite ``values`` (None when over 10 % are not
    finite: the value was undefined in too many resamples)."""
    finite = values[np.isfinite(values)]
    if finite.size < 2 or finite.size < 0.9 * values.size:
        return None
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def draw_sums(stats_UK: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[B, K]``: per resample, the column sums of ``stats_UK`` over ``U`` units drawn with replacement (each
    resample's draw counts per unit times the stats: one matrix product per block of resamples)."""
    U, K = stats_UK.shape
    out_BK = np.empty((resamples, K))
    step = max(1, _DRAWS_PER_BLOCK // max(U, 1))
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        idx_bU = rng.integers(0, U, size=(b, U)) + (np.arange(b) * U)[:, None]
        counts_bU = np.bincount(idx_bU.ravel(), minlength=b * U).reshape(b, U).astype(np.float64)
        out_BK[start:start + b] = counts_bU @ stats_UK
    return out_BK


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den  # 0/0 (no member drawn) is NaN: left out by percentile_interval


def member_key(row: dict) -> str | None:
    """A member's identity across runs: ``split/sample_id`` of a sample row (None for a derived member such as an
    MMBench circular group's hit: its unit identifies it)."""
    if row.get("sample_id") is None:
        return None
    return f"{row.get('split') or ''}/{row['sample_id']}"


@dataclass(frozen=True)
class MeanParts:
    """A mean metric row's members, and their sums per resampling unit: ``value = scale · Σ sums / Σ counts``."""

    units: list[str]  # [U] unit keys
    sums: np.ndarray  # [U] sum of member scores per unit
    counts: np.ndarray  # [U] members per unit
    scale: float
    keys: list[str]  # [M] member identities (member_key, else the unit)
    member_units: np.ndarray  # [M] index into units
    scores: np.ndarray  # [M]

    @property
    def value(self) -> float:
        return self.scale * float(self.sums.sum()) / float(self.counts.sum())


def mean_parts(bench, trace: MeanTrace) -> MeanParts:
    """Sum ``trace``'s members per unit of ``bench`` (a member without a unit is a unit of its own)."""
    index: dict[str, int] = {}
    keys, member_units = [], []
    for i, member in enumerate(trace.members):
        unit = bench.resampling_unit(member) or f"#{i}"
        member_units.append(index.setdefault(unit, len(index)))
        keys.append(member_key(member) or unit)
    scores = np.array([trace.score(m) for m in trace.members], dtype=np.float64)
    member_units = np.array(member_units, dtype=np.int64)
    return MeanParts(units=list(index), sums=np.bincount(member_units, scores, minlength=len(index)),
                     counts=np.bincount(member_units, minlength=len(index)).astype(np.float64), scale=trace.scale,
                     keys=keys, member_units=member_units, scores=scores)


def analytic_stderr(parts: MeanParts) -> float | None:
    """The cluster-robust (linearisation) standard error of the ratio mean (module docstring); None under 2 units."""
    U = len(parts.units)
    if U < 2:
        return None
    total = float(parts.counts.sum())
    mean = float(parts.sums.sum()) / total
    resid = parts.sums - mean * parts.counts
    return parts.scale * math.sqrt(U / (U - 1) * float(resid @ resid)) / total


def unit_rows(bench, rows: list[dict]) -> tuple[list[str], list[list[dict]]]:
    """``rows`` grouped by :meth:`Benchmark.resampling_unit` (first-seen order; a row without one alone)."""
    groups: dict[str, list[dict]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(bench.resampling_unit(row) or f"#{i}", []).append(row)
    return list(groups), list(groups.values())


def resample_rows(bench, units: list[list[dict]], draw: np.ndarray) -> list[dict]:
    """The rows of the drawn units; the ``k``-th extra draw of a unit as :meth:`Benchmark.resampled_copy` ``k``."""
    seen: dict[int, int] = defaultdict(int)
    out: list[dict] = []
    for u in draw.tolist():
        k = seen[u]
        seen[u] += 1
        out.extend(units[u] if k == 0 else [bench.resampled_copy(r, k) for r in units[u]])
    return out


def covered_rows(rows: list[dict], category: str | None) -> list[dict] | None:
    """The sample rows a value that is not a traced mean speaks for: all for the overall value, else the rows whose
    ``category`` (comma-separated lists included) holds ``category``; None when no row does (a ``*_by_<field>``
    grouping of another field)."""
    if category is None:
        return rows
    found = [r for r in rows if category in [c.strip() for c in str(r.get("category") or "").split(",")]]
    return found or None


def metric_key(row: dict) -> tuple[str, str | None]:
    return row["metric"], row["category"]


def with_uncertainty(bench, rows: list[dict], flavor: str, *, seed: int = SEED) -> list[dict]:
    """``bench.aggregate(rows, flavor)`` with the uncertainty columns filled (module docstring)."""
    rows = decode_rows(rows)
    with trace_values() as traces:
        metrics = bench.aggregate(rows, flavor)
    traced = {id(t.row): t for t in traces}
    drawn: dict[int, np.ndarray] = {}  # id(stats) -> resampled sums: rows sharing their sums share the draws
    generic = []
    for row in metrics:
        if row["metric"] in COUNT_METRICS or row["value"] is None:
            continue
        trace = traced.get(id(row))
        rng = rng_for(seed, bench.name, flavor, *metric_key(row))
        if isinstance(trace, MeanTrace) and _same(mean_parts(bench, trace).value, row["value"]):
            parts = mean_parts(bench, trace)
            row.update(unit=bench.unit_name, units=len(parts.units))
            if len(parts.units) >= 2:
                sums = draw_sums(np.stack([parts.sums, parts.counts], axis=1), RESAMPLES, rng)
                _fill(row, analytic_stderr(parts), "analytic", parts.scale * ratio(sums[:, 0], sums[:, 1]), seed)
        elif isinstance(trace, SumTrace) and _same(sum_value(trace), row["value"]):
            row.update(unit=bench.unit_name, units=len(trace.units))
            if len(trace.units) >= 2:
                if id(trace.stats_UK) not in drawn:
                    drawn[id(trace.stats_UK)] = draw_sums(trace.stats_UK, RESAMPLES, rng)
                values = trace.combine(drawn[id(trace.stats_UK)])
                finite = values[np.isfinite(values)]
                _fill(row, float(np.std(finite, ddof=1)) if finite.size > 1 else None, "bootstrap", values, seed)
        else:
            generic.append(row)  # not traced, or changed after it was made
    if generic:
        _generic(bench, rows, flavor, generic, seed)
    return metrics


def sum_value(trace: SumTrace) -> float:
    """``trace``'s value from all its units (NaN where undefined)."""
    return float(trace.combine(trace.stats_UK.sum(axis=0)[None])[0])


def _same(value: float, reported: float) -> bool:
    return math.isclose(value, reported, rel_tol=1e-9, abs_tol=1e-9)


def _fill(row: dict, stderr: float | None, method: str, values: np.ndarray, seed: int) -> None:
    interval = percentile_interval(values)
    if interval is None:
        return
    row.update(stderr=stderr, stderr_method=method, ci_low=interval[0], ci_high=interval[1],
               resamples=int(values.size), bootstrap_seed=seed)


def _generic(bench, rows: list[dict], flavor: str, targets: list[dict], seed: int) -> None:
    keys, units = unit_rows(bench, rows)
    for row in targets:
        covered = covered_rows(rows, row["category"])
        row.update(unit=bench.unit_name,
                   units=None if covered is None else len({bench.resampling_unit(r) for r in covered}))
    if len(units) < 2:
        return
    resamples = generic_resamples(len(rows))
    rng = rng_for(seed, bench.name, flavor, "generic")
    values_BT = np.full((resamples, len(targets)), np.nan)
    for b in range(resamples):
        got = {metric_key(r): r["value"] for r in bench.aggregate(resample_rows(bench, units, rng.integers(
            0, len(units), len(units))), flavor)}
        values_BT[b] = [np.nan if got.get(metric_key(r)) is None else got[metric_key(r)] for r in targets]
    for j, row in enumerate(targets):
        finite = values_BT[:, j][np.isfinite(values_BT[:, j])]
        _fill(row, float(np.std(finite, ddof=1)) if finite.size > 1 else None, "bootstrap", values_BT[:, j], seed)
