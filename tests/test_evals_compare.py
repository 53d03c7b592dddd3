"""evals.compare on prediction rows: paired differences, intervals, McNemar / permutation tests, flips, refusal.

McNemar's p-value is checked against its definition computed here with exact integer arithmetic; the other
expectations are computed from the rows.
"""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import pytest

from evals.compare import (COMPARE_SCHEMA, FLIPS_SCHEMA, InputMismatch, compare_runs, compare_table, flips_table,
                           mcnemar_exact)

REQUIRED = ("benchmark", "flavor", "metric", "category", "run_a", "run_b", "value_a", "value_b", "diff", "ci_low",
            "ci_high", "p_value", "n", "flips_to_right", "flips_to_wrong")


def row(bench, i, score, *, category="c", group=None, targets=("A",), prediction="A", meta=None, question=None,
        split="test", error=None, options="{}"):
    return {"sample_id": str(i), "benchmark": bench, "split": split, "question": question or f"q{i}",
            "options": options, "targets": json.dumps(list(targets)), "category": category, "subcategory": None,
            "group": group, "meta": json.dumps(meta or {}), "prediction": prediction, "extracted": prediction,
            "score": score, "error": error}


def pick(rows, metric="accuracy", category=None, run_a="A", run_b="B"):
    return next(r for r in rows if r["metric"] == metric and r["category"] == category and r["run_a"] == run_a
                and r["run_b"] == run_b)


def mcnemar_by_definition(b: int, c: int) -> Fraction:
    n = b + c
    tail = sum(Fraction(math.comb(n, i), 2 ** n) for i in range(min(b, c) + 1))
    return min(Fraction(1), 2 * tail)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 1), (0, 6), (3, 9), (10, 10), (25, 40), (130, 170), (7, 0),
                                 (400, 623), (2500, 2600)])
def test_mcnemar_exact_is_the_binomial_test(b, c):
    got = mcnemar_exact(b, c)
    assert got == pytest.approx(float(mcnemar_by_definition(b, c)), rel=1e-9, abs=1e-300)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_exact(-1, 2)


def two_runs(n=400, p_a=0.5, p_b=0.7, seed=0, bench="ai2d", **kw):
    rnd = random.Random(seed)
    a, b = [], []
    for i in range(n):
        cat = ["x", "y"][i % 2]
        a.append(row(bench, i, float(rnd.random() < p_a), category=cat, **kw))
        b.append(row(bench, i, float(rnd.random() < p_b), category=cat, **kw))
    return a, b


def test_binary_mean_uses_mcnemar_and_lists_the_flips():
    a, b = two_runs()
    rows, flips = compare_runs({"A": a, "B": b})
    r = pick(rows)
    right_a = {x["sample_id"] for x in a if x["score"] == 1.0}
    right_b = {x["sample_id"] for x in b if x["score"] == 1.0}
    to_right, to_wrong = right_b - right_a, right_a - right_b
    assert r["value_a"] == pytest.approx(100 * len(right_a) / 400) and r["value_b"] == pytest.approx(
        100 * len(right_b) / 400)
    assert r["diff"] == pytest.approx(r["value_b"] - r["value_a"]) and r["n"] == r["n_b"] == 400
    assert r["test"] == "mcnemar_exact" and (r["discordant_b"], r["discordant_c"]) == (len(to_wrong), len(to_right))
    assert r["p_value"] == pytest.approx(float(mcnemar_by_definition(len(to_wrong), len(to_right))), rel=1e-9)
    assert r["p_value"] < 1e-4  # 50 % vs 70 % over 400 samples
    assert (r["flips_to_right"], r["flips_to_wrong"]) == (len(to_right), len(to_wrong))
    assert r["ci_low"] < r["diff"] < r["ci_high"] and r["ci_low"] > 0 and r["resamples"] == 1000
    assert {f["sample_id"] for f in flips if f["flip"] == "to_right"} == to_right
    assert {f["sample_id"] for f in flips if f["flip"] == "to_wrong"} == to_wrong
    x = pick(rows, category="x")
    assert x["n"] == 200 and x["flips_to_right"] == len([s for s in to_right if int(s) % 2 == 0])
    table = compare_table(rows)
    assert table.schema == COMPARE_SCHEMA and set(REQUIRED) <= set(table.column_names)
    assert flips_table(flips).schema == FLIPS_SCHEMA and flips_table(flips).num_rows == len(to_right | to_wrong)


def test_identical_runs_show_no_difference():
    a, _ = two_runs()
    rows, flips = compare_runs({"A": a, "B": [dict(r) for r in a]})
    r = pick(rows)
    assert r["diff"] == 0 and r["p_value"] == 1.0 and r["ci_low"] == r["ci_high"] == 0
    assert r["flips_to_right"] == r["flips_to_wrong"] == 0 and flips == []


def test_no_real_difference_is_not_significant():
    a, b = two_runs(p_a=0.6, p_b=0.6, seed=5)
    r = pick(compare_runs({"A": a, "B": b})[0])
    assert r["p_value"] > 0.05 and r["ci_low"] < 0 < r["ci_high"]


def test_grouped_and_partial_scores_use_the_paired_permutation_test():
    # Video-MME: 3 questions per video -> permutation by video
    rnd = random.Random(7)
    a, b = [], []
    for v in range(80):
        for q in range(3):
            kw = dict(group=f"v{v}", category="Knowledge", meta={"duration": "short", "task_type": "OCR"})
            a.append(row("videomme", f"{v}-{q}", float(rnd.random() < 0.4), **kw))
            b.append(row("videomme", f"{v}-{q}", float(rnd.random() < 0.8), **kw))
    r = pick(compare_runs({"A": a, "B": b})[0])
    assert r["test"] == "permutation" and r["units"] == 80 and r["permutations"] == 1000 and r["n"] == 240
    assert r["p_value"] == pytest.approx(1 / 1001)  # 40 % vs 80 %: no permutation reaches the observed difference
    # ANLS-like partial scores -> permutation
    rnd = random.Random(8)
    a = [row("docvqa", i, rnd.choice([0.0, 0.5, 1.0])) for i in range(200)]
    b = [row("docvqa", i, rnd.choice([0.0, 0.5, 1.0])) for i in range(200)]
    r = pick(compare_runs({"A": a, "B": b})[0], metric="anls")
    assert r["test"] == "permutation" and 0.0 < r["p_value"] <= 1.0 and r["ci_low"] < r["diff"] < r["ci_high"]


def test_pope_values_from_sums_and_mmbench_circular_groups():
    rnd = random.Random(9)
    a, b = [], []
    for i in range(600):
        label = "yes" if i % 2 else "no"
        wrong = "no" if label == "yes" else "yes"
        cat = ["random", "popular", "adversarial"][i % 3]
        a.append(row("pope", i, None, category=cat, targets=(label,), prediction=label if rnd.random() < 0.6 else wrong))
        b.append(row("pope", i, None, category=cat, targets=(label,), prediction=label if rnd.random() < 0.9 else wrong))
    rows, _ = compare_runs({"A": a, "B": b})
    f1 = pick(rows, metric="f1", category="random")
    assert f1["test"] == "permutation" and f1["p_value"] < 0.01 and f1["ci_low"] < f1["diff"] < f1["ci_high"]
    assert f1["n"] == 200 and f1["units"] == 600
    # MMBench: a question and its rotated copy form a circular group; the circular accuracy compares groups
    a, b = [], []
    options = json.dumps({"A": "x", "B": "y"})
    for g in range(100):
        right_a, right_b = rnd.random() < 0.3, rnd.random() < 0.9
        for copy, target in ((0, "A"), (1, "B")):
            index = g + copy * 1_000_000
            kw = dict(group=str(g), targets=(target,), meta={"index": index}, options=options, category="cat")
            a.append(row("mmbench", index, None, prediction=target if right_a else "C", **kw))
            b.append(row("mmbench", index, None, prediction=target if right_b else "C", **kw))
    rows, flips = compare_runs({"A": a, "B": b})
    circ = pick(rows)
    assert circ["test"] == "mcnemar_exact" and circ["units"] == 100 and circ["n"] == 100
    assert circ["discordant_b"] + circ["discordant_c"] <= 100 and circ["p_value"] < 1e-6


def test_unmatched_samples_are_left_out_and_other_inputs_refused():
    a, b = two_runs(n=50)
    rows, _ = compare_runs({"A": a + [row("ai2d", "only-a", 1.0)], "B": b[:40]})
    r = pick(rows)
    assert r["n"] == 40 and r["unmatched_a"] == 11 and r["unmatched_b"] == 0
    changed = [dict(x, question="another question") if x["sample_id"] == "7" else x for x in b]
    with pytest.raises(InputMismatch, match=r"ai2d \[official\]: 1 matched sample.*'7' question"):
        compare_runs({"A": a, "B": changed})


def test_three_runs_give_every_pair_in_order():
    a, b = two_runs(seed=1)
    c, _ = two_runs(seed=2, p_a=0.9)
    rows, _ = compare_runs({"first": a, "second": b, "third": c})
    assert {(r["run_a"], r["run_b"]) for r in rows} == {("first", "second"), ("first", "third"), ("second", "third")}
    with pytest.raises(ValueError, match="at least two runs"):
        compare_runs({"only": a})


def test_values_only_aggregate_computes_are_compared_by_resampling_it(monkeypatch):
    """A per-skill accuracy computed by hand in aggregate (no mean trace): paired bootstrap and permutation through
    aggregate, with fewer draws (four aggregate calls each). MathVista itself reports it through mean_row (the fast
    path); a variant that computes it by hand stands in for it here."""
    from evals import compare
    from evals.aggregate import metric_row
    from evals.bootstrap import generic_resamples
    from evals.registry import get_benchmark

    class HandMeanSkills(type(get_benchmark("mathvista"))):
        def aggregate(self, rows, flavor="official"):
            out = [r for r in super().aggregate(rows, flavor) if r["metric"] != "accuracy_by_skill"]
            rows = [self.record(r) for r in rows]
            for skill in ("algebra", "logic"):
                members = [r for r in rows if skill in r["meta"]["skills"]]
                out.append(metric_row(self.name, flavor, "accuracy_by_skill", skill,
                                      100.0 * sum(r["score"] for r in members) / len(members), len(members)))
            return out

    monkeypatch.setattr(compare, "get_benchmark", lambda name: HandMeanSkills())

    rnd = random.Random(12)
    a, b = [], []
    for i in range(150):
        meta = {"skills": ["logic"] if i % 3 else ["logic", "algebra"]}
        a.append(row("mathvista", i, float(rnd.random() < 0.3), meta=meta))
        b.append(row("mathvista", i, float(rnd.random() < 0.9), meta=meta))
    rows, _ = compare_runs({"A": a, "B": b})
    r = pick(rows, metric="accuracy_by_skill", category="logic")
    assert r["test"] == "permutation" and r["resamples"] == r["permutations"] == generic_resamples(600) == 333
    assert r["p_value"] == pytest.approx(1 / 334) and r["ci_low"] < r["diff"] < r["ci_high"] and r["ci_low"] > 0
    assert r["flips_to_right"] is None  # the rows a skill speaks for are not its category: not known
    assert pick(rows)["test"] == "mcnemar_exact"
