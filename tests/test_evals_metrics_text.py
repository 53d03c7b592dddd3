"""Table tests for the short-answer metrics: VQA accuracy, ANLS, ChartQA relaxed accuracy, OCRBench.

Each table names the reference function its expected values come from; columns are
(prediction, answers, official, lmms-eval, vlmevalkit).
"""

import math

import pytest

from evals.errors import FlavorError
from evals.metrics import anls, ocrbench, relaxed_accuracy, vqa_accuracy

FLAVORS = ("official", "lmms-eval", "vlmevalkit")

BLUE9 = ["blue"] * 9

# Expected values: GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py VQAEval.evaluate
# (+ processPunctuation / processDigitArticle); lmms-eval tasks/textvqa/utils.py textvqa_process_results
# with tasks/_task_utils/vqa_eval_metric.py EvalAIAnswerProcessor; VLMEvalKit
# vlmeval/dataset/utils/vqa_eval.py process_line(method="vqa_score") + process_answer.
VQA_CASES = [
    ("yes", ["yes"] * 10, 1.0, 1.0, 1.0),
    # unanimous GT: the official script compares the raw strings
    ("Yes", ["yes"] * 10, 0.0, 1.0, 1.0),
    ("two", ["2"] * 10, 0.0, 1.0, 1.0),
    (" yes\n", ["yes"] * 10, 1.0, 1.0, 1.0),
    # m matching answers out of 10 → 0.3 / 0.6 / 0.9 / 1.0
    ("red", ["red"] + BLUE9, 0.3, 0.3, 0.3),
    ("red", ["red"] * 2 + ["blue"] * 8, 0.6, 0.6, 0.6),
    ("red", ["red"] * 3 + ["blue"] * 7, 0.9, 0.9, 0.9),
    ("red", ["red"] * 4 + ["blue"] * 6, 1.0, 1.0, 1.0),
    # a single GT answer can never be matched by "another" answer; three identical GTs give 2/3
    ("cat", ["cat"], 0.0, 0.0, 0.0),
    ("cat", ["cat"] * 3, 2 / 3, 2 / 3, 2 / 3),
    # comma: official/VLMEvalKit replace it by a space, lmms-eval deletes it
    ("red,white", ["red white"] * 9 + ["white"], 1.0, 0.0, 1.0),
    # leading minus is punctuation: -5 → 5
    ("-5", ["5"] * 9 + ["6"], 1.0, 1.0, 1.0),
    # period after a digit: official/lmms regex (typo'd look-behind) deletes it, VLMEvalKit keeps it
    ("5.", ["5"] * 9 + ["6"], 1.0, 1.0, 0.0),
    # digit-comma-digit anywhere: every punctuation symbol is deleted → 123
    ("1,2,3", ["123"] * 9 + ["x"], 1.0, 1.0, 1.0),
    # number words and articles
    ("The two dogs", ["2 dogs"] * 9 + ["dog"], 1.0, 1.0, 1.0),
    ("yes?", ["yes"] * 9 + ["no"], 1.0, 1.0, 1.0),
    # contractions table
    ("dont", ["don't"] * 9 + ["no"], 1.0, 1.0, 1.0),
    ("", ["yes"] * 10, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("pred,answers,official,lmms,vlmk", VQA_CASES)
def test_vqa_accuracy(pred, answers, official, lmms, vlmk):
    for flavor, expected in zip(FLAVORS, (official, lmms, vlmk)):
        assert vqa_accuracy(pred, answers, flavor) == pytest.approx(expected), flavor


def test_vqa_accuracy_defaults_and_errors():
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes", []) == 0.0
    with pytest.raises(FlavorError):
        vqa_accuracy("yes", ["yes"], "lmms")


# Expected values: anls 0.0.2 anls.metrics.score.anls_score (official; its own tests use the
# "Coca Cola" vectors below); lmms-eval lmms_eval/api/metrics.py anls; VLMEvalKit
# vlmeval/dataset/utils/vqa_eval.py anls_compute + hit_calculate (DocVQA branch).
COCA = ["Coca Cola", "Coca Cola Company"]
ANLS_CASES = [
    ("Coca cola", COCA, 1.0, 1.0, 1.0),
    ("CocaCola", COCA, 8 / 9, 8 / 9, 8 / 9),
    ("The Coca", COCA, 0.0, 0.0, 0.0),
    ("Cola", COCA, 0.0, 0.0, 0.0),
    # padding spaces: the harnesses divide by the raw length (9), the package by the normalised one (3)
    ("abd      ", ["abc"], 2 / 3, 8 / 9, 8 / 9),
    # NL exactly 0.5: the package uses NL < τ (→ 0), the harnesses 1 - NL < τ (→ 0.5 kept)
    ("abcd", ["abef"], 0.0, 0.5, 0.5),
    ("", [""], 1.0, 1.0, 1.0),
    ("", ["abc"], 0.0, 0.0, 0.0),
    ("COCA COLA", ["coca cola"], 1.0, 1.0, 1.0),
    # best of several answers
    ("1999", ["2000", "1999"], 1.0, 1.0, 1.0),
    # "İ".lower() is two code points: normalised gold has 9 characters, the raw one 8
    ("istanbul", ["İstanbul"], 8 / 9, 7 / 8, 7 / 8),
    ("strasse", ["straße"], 5 / 7, 5 / 7, 5 / 7),
    # InfographicVQA answers: units, thousands separators, several spans (same formula, same flavors)
    ("15 %", ["15%"], 3 / 4, 3 / 4, 3 / 4),
    ("1,200", ["1200", "1.2k"], 4 / 5, 4 / 5, 4 / 5),  # "1.2k" is 3 edits away: 1 - 3/5 < 0.5 → 0
    ("china, india", ["india, china", "china, india"], 1.0, 1.0, 1.0),
    ("chinaa", ["china", "india"], 5 / 6, 5 / 6, 5 / 6),
    ("in 2019 ", ["2019"], 4 / 7, 5 / 8, 5 / 8),  # 3 edits; the harnesses divide by the raw length 8, not 7
]


@pytest.mark.parametrize("pred,answers,official,lmms,vlmk", ANLS_CASES)
def test_anls(pred, answers, official, lmms, vlmk):
    for flavor, expected in zip(FLAVORS, (official, lmms, vlmk)):
        assert anls(pred, answers, flavor) == pytest.approx(expected), flavor


# Expected values: pix2struct/metrics.py relaxed_correctness (official) — lmms-eval
# tasks/chartqa/utils.py relaxed_correctness(prediction, target) is the same function; VLMEvalKit
# vlmeval/dataset/utils/vqa_eval.py process_line(method="relaxed_accuracy") strips the prediction.
RELAXED_CASES = [
    ("1.05", ["1"], 0, 0, 0),  # 0.05000000000000004 > 0.05
    ("21", ["20"], 1, 1, 1),  # exactly 5 %
    ("45%", ["0.45"], 1, 1, 1),
    ("45%", ["45"], 0, 0, 0),
    ("0.0", ["0"], 0, 0, 0),  # target 0 is falsy → string comparison
    ("0", ["0"], 1, 1, 1),
    (" 12", ["12"], 1, 1, 1),  # float() tolerates spaces
    ("1_000", ["1000"], 1, 1, 1),
    ("1e3", ["1000"], 1, 1, 1),
    ("1,000", ["1000"], 0, 0, 0),
    ("12% ", ["0.12"], 0, 0, 1),  # only VLMEvalKit strips before parsing
    (" yes ", ["yes"], 0, 0, 1),
    ("Yes", ["yes"], 1, 1, 1),
    ("2019", ["2020"], 1, 1, 1),  # years within 5 % count (pix2struct issue #35)
    ("nan", ["nan"], 0, 0, 0),  # NaN target is truthy, NaN <= 0.05 is False
    ("10", ["-10"], 0, 0, 0),
    ("5", ["x", "5"], 1, 1, 1),
    ("5", [], 0, 0, 0),
]


@pytest.mark.parametrize("pred,answers,official,lmms,vlmk", RELAXED_CASES)
def test_relaxed_accuracy(pred, answers, official, lmms, vlmk):
    for flavor, expected in zip(FLAVORS, (official, lmms, vlmk)):
        assert relaxed_accuracy(pred, answers, flavor) == expected, flavor


HMER = "Handwritten Mathematical Expression Recognition"
RTR = "Regular Text Recognition"
# Expected values: MultimodalOCR OCRBench eval script (official, keyed on dataset_name == "HME100k");
# lmms-eval tasks/ocrbench/utils.py ocrbench_process_results (strip + full-width folding);
# VLMEvalKit vlmeval/dataset/utils/ocrbench.py OCRBench_eval (keyed on the category).
# Columns: prediction, answers, dataset, question_type, official, lmms-eval, vlmevalkit.
OCRBENCH_CASES = [
    ("The word is HELLO", ["hello"], "IIIT5K", RTR, 1, 1, 1),
    ("x^{2} + 1", ["x^{2}+1"], "HME100k", HMER, 1, 1, 1),
    ("X^{2}+1", ["x^{2}+1"], "HME100k", HMER, 0, 0, 0),  # HME is case-sensitive
    ("ＨＥＬＬＯ", ["hello"], "IIIT5K", RTR, 0, 1, 0),  # full-width folding (lmms-eval 0.7.3)
    ("a b", ["ab"], "HME100k", RTR, 1, 1, 0),  # dataset vs category keying
    ("a b", ["ab"], None, HMER, 1, 1, 1),  # no dataset column (TSV): category decides
    ("anything", [""], "IIIT5K", RTR, 1, 1, 1),  # empty answer is a substring of everything
    ("line1\nline2", ["line1 line2"], "FUNSD", "Key Information Extraction", 1, 1, 1),
    ("nope", ["yes", "hello"], "IIIT5K", RTR, 0, 0, 0),
]


@pytest.mark.parametrize("pred,answers,dataset,qtype,official,lmms,vlmk", OCRBENCH_CASES)
def test_ocrbench(pred, answers, dataset, qtype, official, lmms, vlmk):
    for flavor, expected in zip(FLAVORS, (official, lmms, vlmk)):
        assert ocrbench(pred, answers, dataset, qtype, flavor) == expected, flavor


def test_metrics_are_deterministic_and_nan_free():
    for pred, answers, *_ in VQA_CASES + ANLS_CASES:
        for flavor in FLAVORS:
            a = vqa_accuracy(pred, answers, flavor)
            b = anls(pred, answers, flavor)
            assert a == vqa_accuracy(pred, answers, flavor) and not math.isnan(a)
            assert b == anls(pred, answers, flavor) and not math.isnan(b)
