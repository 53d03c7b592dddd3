"""MathVista answer extraction and matching, per flavor — benchmarks.md §2.10.

A *problem* is the dict of the published fields these rules read: ``question_type`` (``multi_choice`` /
``free_form``), ``answer_type`` (``text`` / ``integer`` / ``float`` / ``list``), ``choices`` (list or None),
``precision`` (as published: a float such as ``1.0``, or None), ``query`` (the published prompt with its hint),
``answer`` and, for VLMEvalKit, ``answer_option`` (the letter of the right choice).

``official`` — lupantech/MathVista ``evaluation/extract_answer.py`` + ``calculate_score.py``:
  :func:`direct_extraction` (empty response → ``""``; a multiple-choice response equal to a choice; ``int()`` /
  ``float()`` of the whole response for integer / float answers), else the LLM judge with
  :func:`judge_prompt` (``demo_prompt`` five-shot + query + response); then :func:`normalize` (a letter or
  ``(X)`` → that choice, other text → the choice at the least Levenshtein distance; ``str(int(float(x)))``;
  ``str(round(float(x), int(precision)))``; ``str(x)`` for lists) and :func:`safe_equal` (``==``).
``lmms-eval`` — ``tasks/mathvista/mathvista_evals.py`` ``MathVistaEvaluator``: the same rules on the stripped
  response, except that ``safe_equal`` compares ``str(x).strip()`` and ``normalize`` rounds with the *published*
  precision. NOTE: the published precision is a float (``1.0``), ``round(x, 1.0)`` raises and the bare ``except``
  turns it into None, so lmms-eval scores every float answer as wrong; reproduced.
``vlmevalkit`` — ``vlmeval/dataset/utils/mathvista.py``: ``post_check(prefetch=True)`` on the model's answer
  (:func:`vlmevalkit_prefetch`: multiple choice → ``can_infer`` letter, kept even when wrong; int / float answers →
  the number when it equals the answer) settles the row without a judge when it is truthy; else the judge
  (:func:`vlmevalkit_judge_prompt`, five in-context examples) and ``post_check(prefetch=False)`` on its reply
  (:func:`vlmevalkit_hit`). NOTE: for ``list``/``text`` free-form answers VLMEvalKit compares ``str(None)`` with the
  answer (its ``res`` is never set on that branch), so those rows are always wrong there; reproduced.

Without a judge every flavor keeps its rule-only path (the extraction the references fall back to when the judge
fails: ``""`` for official / lmms-eval, no answer for VLMEvalKit). NOTE: for multiple choice the official and
lmms-eval normalisation of an empty extraction picks the choice nearest to ``""`` (the shortest one), an
arbitrary pick; ours reports the row as unparsed (None) instead.
"""

from __future__ import annotations

import re

from evals.extract.choice import can_infer
from evals.flavors import LMMS_EVAL, OFFICIAL, VLMEVALKIT, check_flavor
from evals.metrics.anls import levenshtein

MULTI_CHOICE = "multi_choice"

# lupantech/MathVista evaluation/prompts/ext_ans.py ``demo_prompt`` (lmms-eval ``DEMO_PROMPT`` is identical),
# stripped as ``create_test_prompt`` strips it.
DEMO_PROMPT = """Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B"""

# VLMEvalKit ``build_mathvista_gpt4_prompt``: task description, then ``get_gpt4_ICE()`` each followed by "\n"
_VLMK_TASK = ("\nPlease read the following example.\n"
              "Then extract the answer from the model response and type it at the end of the prompt.\n\n")
_VLMK_EXAMPLES = (
    ("Hint: Please answer the question requiring an integer answer and provide the final value,\n"
     "e.g., 1, 2, 3, at the end.\n\nQuestion: Which number is missing?\n\n"
     "Model response: The number missing in the sequence is 14.\n\nExtracted answer: 14\n"),
    ("Hint: Please answer the question requiring a floating-point number with one decimal place and provide the "
     "final value,\ne.g., 1.2, 1.3, 1.4, at the end.\n\nQuestion: What is the fraction of females facing the "
     "camera?\n\nModel response: The fraction of females facing the camera is 0.6,\nwhich means that six out of "
     "ten females in the group are facing the camera.\n\nExtracted answer: 0.6\n"),
    ("Hint: Please answer the question requiring a floating-point number with two decimal places and provide the "
     "final value,\ne.g., 1.23, 1.34, 1.45, at the end.\n\nQuestion: How much money does Luca need to buy a sour "
     "apple candy and a butter-scotch candy? (Unit: $)\n\nModel response: Luca needs $1.45 to buy a sour apple "
     "candy and a butterscotch candy.\n\nExtracted answer: 1.45\n"),
    ("Hint: Please answer the question requiring a Python list as an answer and provide the final list,\n"
     "e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.\n\nQuestion: Between which two years does the line graph saw "
     "its maximum peak?\n\nModel response: The line graph saw its maximum peak between 2007 and 2008.\n\n"
     "Extracted answer: [2007, 2008]\n"),
    ("Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n\n"
     "Question: What fraction of the shape is blue?\n\nChoices: (A) 3/11 (B) 8/11 (C) 6/11 (D) 3/5\n\n"
     "Model response: The correct answer is (B) 8/11.\n\nExtracted answer: B\n"),
)


def judge_prompt(query: str, response: str) -> str:
    """Official / lmms-eval ``create_test_prompt(demo_prompt, query, response)``."""
    return f"{DEMO_PROMPT}\n\n{query}\n\n{response}\n\nExtracted answer: "


def vlmevalkit_judge_prompt(question: str, prediction: str) -> str:
    """VLMEvalKit ``build_mathvista_gpt4_prompt`` (its typo "respone" and missing newline kept)."""
    return (_VLMK_TASK + "".join("\n" + example + "\n" for example in _VLMK_EXAMPLES)
            + question + "\n" + "Model respone: " + prediction + "Extracted answer:")


def direct_extraction(response: str, problem: dict) -> str | None:
    """``extract_answer`` before its judge call: the extraction, or None when the judge must be asked."""
    if not response:
        return ""
    if problem["question_type"] == MULTI_CHOICE and response in (problem.get("choices") or []):
        return response
    if problem["answer_type"] == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if problem["answer_type"] == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    return None


def normalize(extraction, problem: dict, flavor: str = OFFICIAL) -> str | None:
    """``normalize_extracted_answer`` of ``flavor`` (official / lmms-eval); None = no answer."""
    choices = [str(c) for c in problem.get("choices") or []]
    answer_type = problem["answer_type"]
    if problem["question_type"] == MULTI_CHOICE:
        extraction = extraction.strip() if isinstance(extraction, str) else str(extraction)
        if not extraction or not choices:
            return None  # NOTE: the references take the choice nearest to "" here (arbitrary); see the docstring
        letters = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letters:
            extraction = letters[0].upper()
        options = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in options:
            return choices[options.index(extraction)]
        distances = [levenshtein(extraction, choice) for choice in choices]
        return choices[distances.index(min(distances))]
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            precision = problem.get("precision")
            if flavor == LMMS_EVAL:  # round(x, <float>) raises TypeError, which lmms-eval's bare except swallows
                return str(round(float(extraction), precision))
            return str(round(float(extraction), int(precision)))
        if answer_type == "list":
            return str(extraction)
    except (TypeError, ValueError, OverflowError):
        return None
    return extraction if isinstance(extraction, str) else None


def safe_equal(prediction, answer, flavor: str = OFFICIAL) -> bool:
    """Official ``prediction == answer``; lmms-eval ``str(prediction).strip() == str(answer).strip()``."""
    if flavor == LMMS_EVAL:
        return str(prediction).strip() == str(answer).strip()
    return prediction == answer


def score_extraction(extraction, problem: dict, flavor: str = OFFICIAL) -> tuple[str | None, float]:
    """Official / lmms-eval: normalise ``extraction`` and compare it with the answer → ``(normalised, 0/1)``."""
    normalized = normalize(extraction, problem, flavor)
    if normalized is None and problem["question_type"] == MULTI_CHOICE:
        return None, 0.0
    return normalized, float(safe_equal(normalized, problem["answer"], flavor))


def _options(problem: dict) -> dict[str, str]:
    return {chr(65 + i): str(c) for i, c in enumerate(problem.get("choices") or [])}


def vlmevalkit_prefetch(prediction: str, problem: dict):
    """VLMEvalKit ``post_check(line, prefetch=True)``: a letter / ``"Z"`` / number / ``"None"``, or a falsy value
    (False, None, 0) when the judge must be asked."""
    answer = problem["answer"]
    try:
        if problem["question_type"] == MULTI_CHOICE:
            return can_infer(prediction, _options(problem)) or False
        if problem["answer_type"] == "integer":
            res, answer = int(prediction), int(answer)
        elif problem["answer_type"] == "float":
            res, answer = float(prediction), float(answer)
        else:
            res, answer = str(None), str(answer)  # NOTE: VLMEvalKit's res is still None here
    except ValueError:
        return False
    return res if res == answer else False


def vlmevalkit_hit(res, problem: dict) -> tuple[str | None, bool]:
    """VLMEvalKit ``post_check(line, prefetch=False)`` on ``res`` (the judge's reply or the prefetched value) →
    ``(what it parsed, hit)``."""
    response = str(res)
    answer = problem["answer"]
    parsed = None
    try:
        if problem["question_type"] == MULTI_CHOICE:
            parsed = can_infer(response, _options(problem)) or None
            answer = problem.get("answer_option")
        elif problem["answer_type"] == "integer":
            parsed = int(response)
            answer = int(answer)
        elif problem["answer_type"] == "float":
            parsed = float(response)
            answer = float(answer)
        else:
            parsed, answer = str(None), str(answer)
    except ValueError:
        pass
    return (None if parsed is None else str(parsed)), parsed is not None and parsed == answer


def rule_score(prediction: str, problem: dict, flavor: str) -> tuple[str | None, float]:
    """The judge-free score of ``flavor`` (see the module docstring) → ``(extracted, 0/1)``."""
    check_flavor(flavor)
    if flavor == VLMEVALKIT:
        res = vlmevalkit_prefetch(prediction, problem)
        if not res:
            return None, 0.0
        parsed, hit = vlmevalkit_hit(res, problem)
        return parsed, float(hit)
    response = prediction.strip() if flavor == LMMS_EVAL else prediction
    extraction = direct_extraction(response, problem)
    return score_extraction("" if extraction is None else extraction, problem, flavor)


def needs_judge(prediction: str, problem: dict, flavor: str) -> bool:
    """Whether ``flavor``'s reference asks its judge for this answer."""
    check_flavor(flavor)
    if flavor == VLMEVALKIT:
        return not vlmevalkit_prefetch(prediction, problem)
    response = prediction.strip() if flavor == LMMS_EVAL else prediction
    return direct_extraction(response, problem) is None


def judged_score(reply: str, prediction: str, problem: dict, flavor: str) -> tuple[str | None, float]:
    """The score of ``flavor`` from the judge's ``reply`` → ``(extracted, 0/1)``."""
    check_flavor(flavor)
    if flavor == VLMEVALKIT:
        parsed, hit = vlmevalkit_hit(reply, problem)
        return parsed, float(hit)
    # official GPT_Model.get_response and lmms-eval get_chat_response both strip the reply
    return score_extraction(reply.strip(), problem, flavor)
