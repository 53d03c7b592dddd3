"""Table tests for the set-level metrics: POPE, MME, MMBench CircularEval, CIDEr."""

import math

import pytest

from evals.metrics import circular, cider, mme, pope
from evals.metrics.hallusion import hallusion

# Expected values: AoiDragon/POPE evaluate.py (official); lmms-eval tasks/pope/utils.py
# pope_aggregate_* (exact-match items, yes_ratio = ground-truth yes ratio); VLMEvalKit
# vlmeval/dataset/utils/yorn.py POPE_rating on YOrN_Extraction (yes_ratio = ours, predicted yes / N).
POPE_PREDS = ["Yes", "No", "Yes.", "no", "None", "There is no dog.", "I think so", "Yes, there is."]
POPE_LABELS = ["yes", "no", "yes", "yes", "no", "no", "yes", "no"]
POPE_EXPECTED = {
    # parsed: y n y n y n y y → TP 3, FP 2, TN 2, FN 1
    "official": {"accuracy": 5 / 8, "precision": 3 / 5, "recall": 3 / 4, "f1": 2 / 3, "yes_ratio": 5 / 8},
    # exact match: only items 1 and 2 are right; TP 1, FP 0, FN 1 (item 4 "no")
    "lmms-eval": {"accuracy": 2 / 8, "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "yes_ratio": 0.5},
    # YOrN: Y N Y N ? N ? Y → TP 2, FP 1, FN 2 (unknown counts as no)
    "vlmevalkit": {"accuracy": 4 / 8, "precision": 2 / 3, "recall": 0.5, "f1": 4 / 7, "yes_ratio": 3 / 8},
}


@pytest.mark.parametrize("flavor", sorted(POPE_EXPECTED))
def test_pope(flavor):
    got = pope(POPE_PREDS, POPE_LABELS, flavor)
    assert got == pytest.approx(POPE_EXPECTED[flavor])


def test_pope_zero_denominators():
    # official raises ZeroDivisionError there → None; the harnesses return 0
    assert pope(["no", "no"], ["yes", "no"], "official")["precision"] is None
    assert pope(["no", "no"], ["yes", "no"], "lmms-eval")["precision"] == 0.0
    assert pope(["no", "no"], ["yes", "no"], "vlmevalkit")["f1"] == 0.0
    with pytest.raises(ValueError):
        pope(["yes"], [], "official")


def _mme_rows():
    rows = []
    for qid, cat, answers, preds in [
        ("existence/1.png", "existence", ("Yes", "No"), ("Yes", "No")),
        ("existence/2.png", "existence", ("Yes", "No"), ("yes", "Yes")),
        ("code_reasoning/3.png", "code_reasoning", ("Yes", "No"), ("y", "n")),
        ("color/4.png", "color", ("Yes", "No"), ("The answer is yes", "No")),
    ]:
        for answer, pred in zip(answers, preds):
            rows.append({"question_id": qid, "category": cat, "answer": answer, "prediction": pred})
    return rows


# Expected values: lmms-eval tasks/mme/utils.py mme_aggregate_results (acc + acc+ per category, summed);
# VLMEvalKit yorn.py MME_rating; MME eval_tool calculation.py. Parsers per flavor as in test_yes_no.
MME_EXPECTED = {
    "official": {"existence": 125.0, "code_reasoning": 0.0, "color": 50.0, "perception": 175.0, "cognition": 0.0},
    "lmms-eval": {"existence": 125.0, "code_reasoning": 200.0, "color": 50.0, "perception": 175.0, "cognition": 200.0},
    "vlmevalkit": {"existence": 125.0, "code_reasoning": 0.0, "color": 200.0, "perception": 325.0, "cognition": 0.0},
}


@pytest.mark.parametrize("flavor", sorted(MME_EXPECTED))
def test_mme(flavor):
    got = mme(_mme_rows(), flavor)
    exp = MME_EXPECTED[flavor]
    assert got["perception"] == pytest.approx(exp["perception"])
    assert got["cognition"] == pytest.approx(exp["cognition"])
    for cat in ("existence", "code_reasoning", "color"):
        assert got["per_category"][cat] == pytest.approx(exp[cat])
    assert got["detail"]["existence"] == {"acc": 75.0, "acc_plus": 50.0, "images": 2}


def _group(preds, rotated=True):
    """Two rotations of one MMBench question: cat/dog, then dog/cat."""
    rows = [{"index": 7, "prediction": preds[0], "GT": "A", "A": "cat", "B": "dog"}]
    if rotated:
        rows.append({"index": 1_000_007, "prediction": preds[1], "GT": "B", "A": "dog", "B": "cat", "C": float("nan")})
    return rows


# Expected values: VLMEvalKit vlmeval/dataset/utils/multiple_choice.py prefetch_circular_group +
# mcq_circular_eval with exact_matching (official = vlmevalkit); lmms-eval tasks/mmbench/mmbench_evals.py
# MMBench_Evaluator.eval_sub_data(static_only=True). Columns: predictions, vlmevalkit, lmms-eval.
CIRCULAR_CASES = [
    (("A", "B"), 1, 1),
    (("A", "A"), 0, 0),
    (("B", "B"), 0, 0),
    # "answer is c…" matches the verbose regex with C (not an option); answer too long for text match
    (("The answer is cat", "cat"), 0, 1),
    (("Answer: A", "(B)"), 1, 1),
    ((" A ", "B\n"), 1, 1),
    (("I cannot tell", "B"), 0, 0),
]


@pytest.mark.parametrize("preds,vlmk,lmms", CIRCULAR_CASES)
def test_circular(preds, vlmk, lmms):
    assert circular(_group(preds), "vlmevalkit") == vlmk
    assert circular(_group(preds), "official") == vlmk
    assert circular(_group(preds), "lmms-eval") == lmms


def test_circular_verbose_answer():
    rows = [{"index": 3, "prediction": "The correct answer is **B**. Because A is wrong", "answer": "B",
             "A": "x", "B": "y"}]
    assert circular(rows, "vlmevalkit") == 1  # PR #1552 regex
    assert circular(rows, "lmms-eval") == 0  # extract_mcq_answer picks A
    assert circular([], "official") == 0


# Expected values derived by hand from pycocoevalcap cider/cider_scorer.py (CiderScorer.compute_cider):
# idf = log(2 images) − log(max(1, df)); "length" counts bigrams; σ = 6.
def test_cider_identical_captions():
    got = cider({"1": "a b", "2": "c d"}, {"1": ["a b"], "2": ["c d"]})
    # unigram and bigram cosines are 1, 3- and 4-gram vectors are empty: mean(1, 1, 0, 0) × 10
    assert got["per_image"] == pytest.approx({"1": 5.0, "2": 5.0})
    assert got["cider"] == pytest.approx(5.0)


def test_cider_length_penalty_and_unseen_ngrams():
    got = cider({"1": "a b", "2": "x y"}, {"1": ["a b c"], "2": ["d e"]})
    expected_1 = (2 / math.sqrt(6) + 1 / math.sqrt(2)) * math.exp(-1 / 72) / 4 * 10
    assert got["per_image"]["1"] == pytest.approx(expected_1)
    assert got["per_image"]["2"] == 0.0
    assert got["cider"] == pytest.approx(expected_1 / 2)


def test_cider_multiple_references_and_errors():
    one = cider({"1": "a b", "2": "c d"}, {"1": ["a b", "a b"], "2": ["c d"]})
    assert one["per_image"]["1"] == pytest.approx(5.0)  # mean over references
    assert cider({}, {}) == {"cider": 0.0, "per_image": {}}
    with pytest.raises(ValueError):
        cider({"1": "a"}, {"2": ["a"]})


# HallusionBench by hand from the references' definitions (columns: category, subcategory, l2-category, set, figure,
# question, correct). Official utils.py: get_eval_all / get_eval_fig (VS figure 0 = asked without a figure, left
# out) / get_eval_pair_all; lmms-eval hb_aggregation_result_intern: same keys, nothing left out; VLMEvalKit
# Hallusion_rating: keys l2-category + set + figure / question.
HALLUSION_ITEMS = [
    ("VD", "illusion", "VD_illusion", 0, 0, 0, True),
    ("VD", "illusion", "VD_illusion", 0, 0, 1, True),
    ("VD", "illusion", "VD_illusion", 0, 1, 0, False),
    ("VD", "illusion", "VD_illusion", 0, 1, 1, True),
    ("VS", "chart", "VS_chart", 0, 0, 0, False),  # no figure
    ("VS", "chart", "VS_chart", 0, 1, 0, True),
]
HALLUSION_EXPECTED = {
    # figures: VD/0 ok, VD/1 not, VS/1 ok (VS/0 left out) → 2/3; questions: VD q0 not, VD q1 ok, VS q0 not → 1/3
    "official": {"aAcc": 400 / 6, "fAcc": 200 / 3, "qAcc": 100 / 3},
    # the figure-less VS/0 counts as a figure, answered wrongly → 2/4
    "lmms-eval": {"aAcc": 400 / 6, "fAcc": 50.0, "qAcc": 100 / 3},
    "vlmevalkit": {"aAcc": 400 / 6, "fAcc": 50.0, "qAcc": 100 / 3},
}


@pytest.mark.parametrize("flavor", sorted(HALLUSION_EXPECTED))
def test_hallusion(flavor):
    keys = ("category", "subcategory", "l2_category", "set_id", "figure_id", "question_id", "correct")
    items = [dict(zip(keys, item)) for item in HALLUSION_ITEMS]
    assert hallusion(items, flavor) == pytest.approx(HALLUSION_EXPECTED[flavor])


def test_hallusion_vlmevalkit_keys_ignore_category():
    # VLMEvalKit keys figures by l2-category, set and figure only: two categories sharing an l2 label and ids merge
    items = [dict(category="VD", subcategory="chart", l2_category="chart", set_id=0, figure_id=1, question_id=0,
                  correct=True),
             dict(category="VS", subcategory="chart", l2_category="chart", set_id=0, figure_id=1, question_id=1,
                  correct=False)]
    assert hallusion(items, "vlmevalkit")["fAcc"] == 0.0 and hallusion(items, "official")["fAcc"] == 50.0
    assert hallusion([], "official") == {"aAcc": None, "fAcc": None, "qAcc": None}
    with pytest.raises(ValueError):
        hallusion(items, "lmms")
