"""Uncertainty of metric values (evals.bootstrap): every metrics.parquet row of a value has a standard error and a 95 %
interval; a mean's bootstrap agrees with its analytic standard error; grouped benchmarks resample whole groups.

Expected standard errors are computed here from their textbook definitions (binomial ``sqrt(p(1-p)/n)``, the
cluster-robust ratio estimator), never from the module's own output.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evals.aggregate import COUNT_METRICS, METRIC_NAMES, metric_row
from evals.bootstrap import RESAMPLES, SEED, generic_resamples, resample_rows, unit_rows, with_uncertainty
from evals.registry import get_benchmark
from evals.scoring import aggregate_rows, write_metrics


def row(bench, i, score, *, category="c", group=None, targets=("A",), prediction="A", meta=None, error=None):
    return {"sample_id": str(i), "benchmark": bench, "split": "test", "question": f"q{i}", "options": "{}",
            "targets": json.dumps(list(targets)), "category": category, "subcategory": None, "group": group,
            "meta": json.dumps(meta or {}), "prediction": prediction, "extracted": prediction, "score": score,
            "error": error}


def find(metrics, metric, category=None):
    return next(m for m in metrics if m["metric"] == metric and m["category"] == category)


def binary_rows(bench, n, p, seed=0, **kw):
    rnd = random.Random(seed)
    return [row(bench, i, float(rnd.random() < p), **kw) for i in range(n)]


def test_mean_bootstrap_agrees_with_the_binomial_standard_error():
    rows = binary_rows("ai2d", 2000, 0.3)
    m = find(with_uncertainty(get_benchmark("ai2d"), rows, "official"), "accuracy")
    p = sum(r["score"] for r in rows) / len(rows)
    # the analytic stderr of a plain mean of 0/1 scores: s / sqrt(n), s with ddof=1
    expected = 100 * math.sqrt(p * (1 - p) * len(rows) / (len(rows) - 1) / len(rows))
    assert m["stderr"] == pytest.approx(expected, rel=1e-9) and m["stderr_method"] == "analytic"
    # the percentile interval of RESAMPLES draws: width ~ 2 * 1.96 stderr (Monte Carlo error of the tails ~ 5 %)
    assert m["ci_low"] < m["value"] < m["ci_high"]
    assert (m["ci_high"] - m["ci_low"]) == pytest.approx(2 * 1.96 * expected, rel=0.1)
    assert m["resamples"] == RESAMPLES and m["bootstrap_seed"] == SEED
    assert m["unit"] == "sample" and m["units"] == 2000 and m["n"] == 2000


def test_bootstrap_standard_deviation_matches_the_analytic_one_for_partial_scores():
    """ANLS-like scores in [0, 1]: the analytic s/sqrt(n) and a bootstrap's spread (2.5-97.5 % width / 3.92) agree."""
    rnd = random.Random(3)
    rows = [row("docvqa", i, rnd.choice([0.0, 0.25, 0.5, 0.9, 1.0])) for i in range(1500)]
    m = find(with_uncertainty(get_benchmark("docvqa"), rows, "official"), "anls")
    scores = np.array([r["score"] for r in rows])
    assert m["stderr"] == pytest.approx(100 * scores.std(ddof=1) / math.sqrt(len(scores)), rel=1e-9)
    assert (m["ci_high"] - m["ci_low"]) / 3.92 == pytest.approx(m["stderr"], rel=0.1)


def test_grouped_benchmark_resamples_whole_groups():
    """Video-MME: 3 questions per video answered all right or all wrong. The interval must be that of 60 videos, not
    of 180 independent questions (sqrt(3) narrower) — this fails if rows were resampled one by one."""
    rnd = random.Random(1)
    rows = []
    for video in range(60):
        right = float(rnd.random() < 0.5)
        rows += [row("videomme", f"{video}-{q}", right, group=f"v{video}", category="Knowledge",
                     meta={"duration": "short", "task_type": "OCR"}) for q in range(3)]
    m = find(with_uncertainty(get_benchmark("videomme"), rows, "lmms-eval"), "accuracy")
    p = sum(r["score"] for r in rows) / len(rows)
    by_video = 100 * math.sqrt(p * (1 - p) / 59)  # cluster-robust SE of a mean of 60 equal-size clusters
    by_question = 100 * math.sqrt(p * (1 - p) / 179)
    assert m["unit"] == "video" and m["units"] == 60 and m["n"] == 180
    assert m["stderr"] == pytest.approx(by_video, rel=1e-9)
    width = (m["ci_high"] - m["ci_low"]) / 3.92
    assert width == pytest.approx(by_video, rel=0.12)
    assert width > 1.4 * by_question


def hallusion_rows(sets, seed=2, p=0.5):
    """Question sets of one figure with two questions, both right or both wrong."""
    rnd = random.Random(seed)
    rows = []
    for s in range(sets):
        right = rnd.random() < p if p not in (0.0, 1.0) else bool(p)
        for q in range(2):
            meta = {"set_id": str(s), "figure_id": "1", "question_id": str(q), "l2_category": "chart"}
            rows.append(row("hallusionbench", f"{s}_{q}", float(right), category="VD", targets=("yes",),
                            prediction="yes" if right else "no", meta=meta))
    return rows


def skill_rows(n, seed=6, p=None):
    """MathVista rows, every third with two skills: ``accuracy_by_skill`` is a mean MathVista's aggregate computes by
    hand over multi-label rows, the kind of value only the generic path (aggregate on each resample) handles."""
    rnd = random.Random(seed)
    return [row("mathvista", i, rnd.choice([0.0, 1.0]) if p is None else float(rnd.random() < p),
                meta={"skills": ["logic"] if i % 3 else ["logic", "algebra"]}) for i in range(n)]


class HandMeanSkills(type(get_benchmark("mathvista"))):
    """MathVista whose per-skill accuracy is computed by hand (metric_row, not mean_row): only the generic path —
    aggregate called on resampled rows — can give it an interval."""

    def aggregate(self, rows, flavor="official"):
        out = [r for r in super().aggregate(rows, flavor) if r["metric"] != "accuracy_by_skill"]
        rows = [self.record(r) for r in rows]
        members = [r for r in rows if "algebra" in r["meta"]["skills"]]
        return out + [metric_row(self.name, flavor, "accuracy_by_skill", "algebra",
                                 100.0 * sum(r["score"] for r in members) / len(members), len(members))]


def test_generic_path_resamples_through_aggregate():
    """Resampled by calling aggregate on resampled rows: the spread is about s / sqrt(n) of the rows with the skill."""
    rows = skill_rows(600)
    metrics = with_uncertainty(HandMeanSkills(), rows, "official")
    m = find(metrics, "accuracy_by_skill", "algebra")
    scores = np.array([r["score"] for r in rows if int(r["sample_id"]) % 3 == 0])
    assert m["stderr_method"] == "bootstrap" and m["resamples"] == generic_resamples(len(rows)) == 333
    assert m["stderr"] == pytest.approx(100 * scores.std(ddof=1) / math.sqrt(len(scores)), rel=0.15)
    assert m["ci_low"] < m["value"] < m["ci_high"] and m["n"] == 200
    assert find(metrics, "accuracy")["stderr_method"] == "analytic"  # the same run's plain mean: the mean path
    assert generic_resamples(150) == 1000 and generic_resamples(10_000) == 100  # 200,000 rows aggregated in all
    shipped = find(with_uncertainty(get_benchmark("mathvista"), rows, "official"), "accuracy_by_skill", "algebra")
    assert shipped["stderr_method"] == "analytic" and shipped["value"] == m["value"]  # mean_row: the fast path


def test_a_unit_drawn_twice_counts_as_two_units():
    """resample_rows gives the extra draw of a question set other ids (resampled_copy), so that aggregate sees three
    figures for the draw (set 0, set 0, set 1), not two."""
    bench = get_benchmark("hallusionbench")
    rows = [bench.record(r) for r in hallusion_rows(2, p=1.0)]
    rows[2:] = [dict(r, prediction="no", score=0.0) for r in rows[2:]]  # set 1 wrong
    _, units = unit_rows(bench, rows)
    assert [len(u) for u in units] == [2, 2]
    drawn = resample_rows(bench, units, np.array([0, 0, 1]))
    assert len(drawn) == 6 and drawn[2]["meta"]["set_id"] == "0~1" and drawn[2]["sample_id"] == "0_0~1"
    assert find(bench.aggregate(drawn, "lmms-eval"), "fAcc")["value"] == pytest.approx(200 / 3)


def test_sums_path_hallusionbench_resamples_question_sets():
    """fAcc over 300 sets of one figure: the spread of 300 Bernoulli figures, the sets drawn whole."""
    rows = hallusion_rows(300)
    m = find(with_uncertainty(get_benchmark("hallusionbench"), rows, "lmms-eval"), "fAcc")
    p = m["value"] / 100
    assert m["stderr_method"] == "bootstrap" and m["unit"] == "question set" and m["units"] == 300
    assert m["stderr"] == pytest.approx(100 * math.sqrt(p * (1 - p) / 300), rel=0.12)


def test_sums_path_pope_and_mme():
    """POPE (F1 from summed counts) and MME (acc+ over image pairs) resample their per-unit sums: accuracy's spread is
    the binomial one, acc+'s that of the images."""
    rnd = random.Random(4)
    rows = []
    for i in range(1200):
        label = "yes" if i % 2 else "no"
        right = rnd.random() < 0.8
        rows.append(row("pope", i, None, category=["random", "popular", "adversarial"][i % 3], targets=(label,),
                        prediction=label if right else ("no" if label == "yes" else "yes")))
    metrics = with_uncertainty(get_benchmark("pope"), rows, "official")
    acc = find(metrics, "accuracy")
    p = acc["value"] / 100
    assert acc["stderr_method"] == "bootstrap" and acc["resamples"] == RESAMPLES
    assert acc["stderr"] == pytest.approx(100 * math.sqrt(p * (1 - p) / 1200), rel=0.12)
    for m in metrics:
        if m["metric"] not in COUNT_METRICS:
            assert m["ci_low"] <= m["value"] <= m["ci_high"], m
    mme_rows = []
    for image in range(400):
        right = rnd.random() < 0.6
        for q, label in enumerate(("yes", "no")):
            mme_rows.append(row("mme", f"{image}-{q}", None, category="existence", group=f"img{image}",
                                targets=(label,), prediction=label if right else "maybe"))
    plus = find(with_uncertainty(get_benchmark("mme"), mme_rows, "official"), "acc_plus", "existence")
    p = plus["value"] / 100
    assert plus["unit"] == "image" and plus["units"] == 400
    assert plus["stderr"] == pytest.approx(100 * math.sqrt(p * (1 - p) / 400), rel=0.12)


def test_counts_get_no_interval_and_values_are_reproducible():
    rows = binary_rows("ai2d", 300, 0.5) + [row("ai2d", "bad", None, error="media: broken")]
    first = with_uncertainty(get_benchmark("ai2d"), rows, "official")
    for m in first:
        if m["metric"] in COUNT_METRICS:
            assert m["ci_low"] is None and m["stderr"] is None and m["resamples"] is None
    # the same rows give the same interval, whatever else the run holds (each value has its own generator)
    again = aggregate_rows(rows + binary_rows("scienceqa", 50, 0.5))
    assert [m for m in again if m["benchmark"] == "ai2d"] == first


def test_a_single_unit_has_no_interval():
    m = find(with_uncertainty(get_benchmark("ai2d"), [row("ai2d", 0, 1.0)], "official"), "accuracy")
    assert m["value"] == 100.0 and m["units"] == 1 and m["ci_low"] is None and m["stderr"] is None


def test_metrics_parquet_has_the_uncertainty_columns(tmp_path):
    # a table written before the columns existed keeps its other flavor's rows, the new columns null
    legacy = pa.table({"benchmark": ["ai2d"], "flavor": ["vlmevalkit"], "metric": ["accuracy"], "category": [None],
                       "value": [50.0], "n": [4]})
    pq.write_table(legacy, tmp_path / "metrics.parquet")
    write_metrics(tmp_path, aggregate_rows(binary_rows("ai2d", 100, 0.5)), "official")
    table = pq.read_table(tmp_path / "metrics.parquet")
    assert table.column_names == METRIC_NAMES
    for name in ("stderr", "ci_low", "ci_high", "resamples", "bootstrap_seed", "unit", "units", "stderr_method"):
        assert name in METRIC_NAMES
    got = {(r["flavor"], r["metric"]): r for r in table.to_pylist()}
    assert got["vlmevalkit", "accuracy"]["ci_low"] is None and got["vlmevalkit", "accuracy"]["value"] == 50.0
    assert got["official", "accuracy"]["ci_low"] < got["official", "accuracy"]["ci_high"]
    assert list(metric_row("b", "official", "m", None, 1.0, 1)) == METRIC_NAMES


def replicate(bench, row_: dict, k: int) -> dict:
    """Copy ``k`` of a record as another sample (another unit): ids suffixed; an MMBench question's rotated copies
    keep pointing at their base question."""
    if bench.name == "mmbench":
        index = int(row_["meta"]["index"])
        base, rotation = index % 1_000_000 + 10_000 * k, index // 1_000_000
        new = base + rotation * 1_000_000
        return dict(row_, sample_id=str(new), group=str(base), meta=dict(row_["meta"], index=new))
    return bench.resampled_copy(row_, k)


def test_every_benchmark_gets_intervals(tmp_path):
    """The test datasets of every benchmark, each sample copied into 40 units answered right or wrong at random:
    every value that is not a count has an interval around it from the path its form allows."""
    try:
        from evals_fixtures.datasets import build_all
    except ImportError:  # tests/ imported as a package
        from tests.evals_fixtures.datasets import build_all
    from evals.registry import list_benchmarks

    paths = build_all(tmp_path / "data")
    assert set(paths) == set(list_benchmarks())
    rnd = random.Random(11)
    for name, path in sorted(paths.items()):
        bench = get_benchmark(name)
        rows = []
        for sample in bench.load(path):
            if sample.error is not None:
                continue
            for k in range(1, 41):
                rec = replicate(bench, bench.record(sample.to_record()), k)
                prediction = sample.targets[0] if rnd.random() < 0.6 else "zzz"
                extracted, score = bench.score(rec, prediction, "official")
                rows.append(dict(rec, prediction=prediction, extracted=extracted, score=score, error=None))
        for m in aggregate_rows(rows, "official"):
            if m["metric"] in COUNT_METRICS or m["value"] is None:
                assert m["ci_low"] is None and m["stderr"] is None, m
                continue
            assert m["unit"] == bench.unit_name, m
            if m["units"] is not None and m["units"] < 2:  # OCRBench's groups without a sample here
                assert m["n"] == 0 and m["ci_low"] is None, m
                continue
            # units: null for a value aggregate computes by hand over rows it picks by another field (not known)
            assert m["ci_low"] is not None and m["stderr"] is not None and m["resamples"] >= 100, m
            assert m["ci_low"] - 1e-9 <= m["ci_high"] and m["stderr_method"] in ("analytic", "bootstrap"), m
            if m["metric"] not in ("f1", "precision", "recall", "f1_mean_over_splits"):  # ratios of small counts
                assert m["ci_low"] - 1e-6 <= m["value"] <= m["ci_high"] + 1e-6, m
