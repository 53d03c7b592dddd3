"""Table tests for the answer extractors: option letters, yes/no, MMMU parsing, Video-MME, MVBench."""

import pytest

from evals.extract import can_infer, choice, extract_mcq_answer, mmbench_legacy_can_infer, yes_no
from evals.extract.mmmu import parse_open_response
from evals.extract.video import (
    mvbench_check_ans,
    mvbench_lmms_eval,
    mvbench_vlmevalkit,
    videomme_lmms_eval,
    videomme_official,
    videomme_vlmevalkit,
)
from evals.metrics import mmmu

FRUIT = {"A": "apple", "B": "banana", "C": "cherry", "D": "durian"}

# Expected values: "official"/"vlmevalkit" = VLMEvalKit vlmeval/utils/matching_util.py can_infer
# (can_infer_option + PR #1552 verbose regex + can_infer_text); "lmms-eval" =
# lmms_eval/tasks/_task_utils/mcq_extract.py extract_mcq_answer. Columns: response, vlmevalkit, lmms-eval.
CHOICE_CASES = [
    ("B", "B", "B"),
    ("b", None, None),  # lmms-eval is case-sensitive; VLMEvalKit tokens are too
    ("(C) cherry", "C", "C"),
    ("The answer is B.", "B", "B"),
    # two letters: VLMEvalKit falls to the verbose regex; lmms-eval ranks "start" (A.) highest
    ("A. apple is wrong, the answer is C", "C", "A"),
    # option text: VLMEvalKit can_infer_text; lmms-eval finds no upper-case letter
    ("I think it is a banana", "B", None),
    ("Z", None, None),  # VLMEvalKit "Z" = none of the options → None
    ("Cannot determine the answer", None, "C"),  # lmms-eval: any-occurrence fallback finds "C"
    ("A A B", None, "A"),
    # (?i) verbose regex reads the "a" of "apple" as the letter A
    ("The answer is apple", "A", None),
    # the single letter must be among the last 5 tokens; the text fallback rejects long answers
    ("B is what I would pick if forced to choose among these", None, "B"),
    ("The correct answer is **B**. Because A is wrong", "B", "A"),
    ("", None, None),
    ("E", None, None),  # not an option here
]


@pytest.mark.parametrize("response,vlmk,lmms", CHOICE_CASES)
def test_choice(response, vlmk, lmms):
    assert choice(response, dict(FRUIT), "vlmevalkit") == vlmk
    assert choice(response, dict(FRUIT), "official") == vlmk
    assert choice(response, dict(FRUIT), "lmms-eval") == lmms


def test_can_infer_reports_z_and_extract_mcq_defaults():
    assert can_infer("Z", dict(FRUIT)) == "Z"
    assert can_infer("Sorry, I can't help with images of people yet.", dict(FRUIT)) == "Z"
    assert extract_mcq_answer("The best answer is (E)") == "E"  # default letters A..H
    assert extract_mcq_answer("   ") is None


# Expected values: lmms-eval tasks/mmbench/mmbench_evals.py MMBench_Evaluator.can_infer (legacy rule,
# letters A..E whatever the options). Columns: response, result.
LEGACY_CASES = [
    ("B", "B"),
    ("Answer: C", "C"),
    ("(B).", "B"),  # "(" + B + ")." token pattern
    ("A dog sits on B", None),  # "A" may be an article: bare-token rule skipped, no affix pattern
    ("I pick banana", "B"),
    ("E", "E"),  # legacy rule accepts E even with four options
]


@pytest.mark.parametrize("response,expected", LEGACY_CASES)
def test_mmbench_legacy_can_infer(response, expected):
    assert mmbench_legacy_can_infer(response, dict(FRUIT)) == expected


# Expected values: MME eval_tool/calculation.py parse_pred_ans after .lower() (official); lmms-eval
# tasks/mme/utils.py parse_pred_ans; VLMEvalKit vlmeval/dataset/utils/yorn.py YOrN_Extraction.
YES_NO_CASES = [
    ("Yes", "yes", "yes", "yes"),
    ("No.", "no", "no", "no"),
    ("y", None, "yes", None),
    ("n", None, "no", None),
    ("Not sure", "no", "no", None),
    ("None", "no", "no", None),
    ("nobody", "no", "no", None),
    ("The answer is yes", None, None, "yes"),
    ("  yes", None, "yes", "yes"),  # official looks at the first 4 characters without stripping
    ("Yes, it is. No doubt", "yes", "yes", None),
    ("Answer: no", None, None, "no"),
    ("yes\n", "yes", "yes", "yes"),
    ("", None, None, None),
]


@pytest.mark.parametrize("pred,official,lmms,vlmk", YES_NO_CASES)
def test_yes_no(pred, official, lmms, vlmk):
    assert yes_no(pred, "official") == official
    assert yes_no(pred, "lmms-eval") == lmms
    assert yes_no(pred, "vlmevalkit") == vlmk


ANIMALS = ["cat", "dog", "fish", "bird"]
# Expected values: MMMU-Benchmark/MMMU mmmu/utils/eval_utils.py parse_multi_choice_response /
# eval_multi_choice (random fallback replaced by None). Columns: response, parsed, correct for gold "B".
MMMU_MC_CASES = [
    ("(B)", "B", True),
    ("The answer is B", "B", True),
    ("B.", "B", True),
    ("A and B", "B", True),  # several candidates → the one occurring last
    ("I think the animal shown is a dog, clearly", "B", True),  # > 5 words: option text
    ("It is (A) or maybe (C)", "C", False),
    ("nothing", None, False),  # official: random.choice; ours: unparsed
    ("AnswerB is it", None, False),  # official needs " B "; lmms-eval's copy accepts "B "
]


@pytest.mark.parametrize("response,parsed,correct", MMMU_MC_CASES)
def test_mmmu_multiple_choice(response, parsed, correct):
    out = mmmu(response, "multiple-choice", ANIMALS, "B")
    assert out == {"parsed_pred": parsed, "correct": correct}


def test_mmmu_multiple_choice_lmms_eval_copy_accepts_letter_space():
    assert mmmu("AnswerB is it", "multiple-choice", ANIMALS, "B", flavor="lmms-eval")["parsed_pred"] == "B"


# Expected values: official parse_open_response / eval_open. Columns: response, gold, correct.
MMMU_OPEN_CASES = [
    ("The answer is 1.06 m", "1.06", True),
    ("3.429", "['24/7', '3.429']", True),  # list literal gold, numbers rounded to 2 decimals
    ("It is transformation.", "Transformation", True),
    ("C", "C", True),  # single characters are padded: [" c", "c "]
    ("There are 5 apples", "4", False),
    ("12.970", "12.97", True),
    ("The total is 1,000 dollars", "1000", True),
    ("", "4", False),
]


@pytest.mark.parametrize("response,gold,correct", MMMU_OPEN_CASES)
def test_mmmu_open(response, gold, correct):
    assert mmmu(response, "open", [], gold)["correct"] is correct


def test_mmmu_open_parse_is_sorted_and_stable():
    parsed = parse_open_response("So the result is 12 or 1,200. Therefore x = 3")
    assert parsed == parse_open_response("So the result is 12 or 1,200. Therefore x = 3")
    assert parsed == sorted(parsed, key=lambda v: (isinstance(v, float), str(v) if isinstance(v, str) else "", v if isinstance(v, float) else 0))
    assert 3.0 in parsed


# Expected values: BradyFU/Video-MME evaluation/eval_your_results.py extract_characters_regex (official);
# lmms-eval tasks/videomme/utils.py (→ extract_mcq_answer over ABCD); VLMEvalKit
# vlmeval/dataset/utils/videomme.py extract_characters_regex. Columns: response, official, lmms, vlmk.
VIDEOMME_CASES = [
    ("B", "B", "B", "B"),
    ("The best answer is C.", "C", "C", "C"),
    ("Based on the video, C", "B", "C", "B"),  # first capital A-D anywhere ("Based")
    ("Answer: D", "A", "D", "D"),  # only VLMEvalKit removes "Answer:"
    ("The best option is D", "D", "D", "D"),  # prefix not removed (missing comma), but "T" is not A-D
    ("this is a long response with more than ten words and no option letters at all", None, None, None),
    ("", None, None, None),
]


@pytest.mark.parametrize("response,official,lmms,vlmk", VIDEOMME_CASES)
def test_videomme_extractors(response, official, lmms, vlmk):
    assert videomme_official(response) == official
    assert videomme_lmms_eval(response) == lmms
    assert videomme_vlmevalkit(response) == vlmk


# Expected values: VLMEvalKit vlmeval/dataset/utils/mvbench.py check_ans (= OpenGVLab MVBench) with
# gt "(B) ..."; lmms-eval tasks/mvbench/utils.py mcq_acc. Columns: prediction, check_ans, lmms letter.
MVBENCH_CASES = [
    ("B) the man runs", True, "B"),  # continuation of the "Best option:(" prefill
    ("(B) the man runs", True, "B"),
    ("b.", True, "B"),
    ("", True, ""),  # check_ans: "" in "(b)" — an empty prediction counts as correct
    ("(A) the man sits", False, "A"),
    ("A. the man sits", False, "A"),
    ("The man runs", False, ""),  # no standalone letter ("the" is not one)
    ("a man runs", False, "A"),  # the article "a" is read as option A by lmms-eval
]


@pytest.mark.parametrize("pred,check,lmms", MVBENCH_CASES)
def test_mvbench_extractors(pred, check, lmms):
    assert mvbench_check_ans(pred, "B") is check
    got = mvbench_lmms_eval(pred)
    assert (got if len(got) == 1 and got.isupper() else "") == lmms


def test_mvbench_vlmevalkit_falls_back_to_option_text():
    options = {"A": "the man sits", "B": "the man runs"}
    assert mvbench_vlmevalkit("He runs: the man runs", "B", options) is True
    assert mvbench_check_ans("He runs: the man runs", "B") is False


# lmms-eval tasks/hallusion_bench/evaluate_hb.py hb_aggregation_result_intern: "yes" anywhere → yes, else no
@pytest.mark.parametrize("pred,expected", [("Yes.", "yes"), ("NO", "no"), ("", "no"), ("I cannot tell", "no"),
                                           ("Her eyes are closed", "yes"), ("No, not yes", "yes")])
def test_yes_substring(pred, expected):
    from evals.extract.yesno import yes_substring

    assert yes_substring(pred) == expected


# The HF MMStar question holds its options: "…\nOptions: A: x, B: y, C: z, D: w"
@pytest.mark.parametrize("question,bare,options", [
    ("Which?\nOptions: A: red, B: blue, C: green, D: grey", "Which?",
     {"A": "red", "B": "blue", "C": "green", "D": "grey"}),
    ("What is shown?\nOptions: A: A cat, sitting on a mat., B: Two dogs, C: 3, 4, and 5, D: None", "What is shown?",
     {"A": "A cat, sitting on a mat.", "B": "Two dogs", "C": "3, 4, and 5", "D": "None"}),
    ("Is it?\nOptions: A: yes, B: no", "Is it?", {"A": "yes", "B": "no"}),
    ("No options here", "No options here", {}),
])
def test_mmstar_split_question(question, bare, options):
    from evals.benchmarks.mmstar import split_question

    assert split_question(question) == (bare, options)
