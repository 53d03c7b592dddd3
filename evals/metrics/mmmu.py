"""MMMU scoring with the official rules (``MMMU-Benchmark/MMMU mmmu/utils/eval_utils.py``), §2.5.

Multiple choice: the parsed letter must equal the gold letter (``eval_multi_choice``). Open: any parsed
number equal to a normalised gold number, or any normalised gold string contained in a parsed string
(``eval_open``). Gold answers stored as a Python list literal (``"['24/7', '3.429']"``, as in the HF
dataset; the official ``answer_dict_val.json`` holds real lists) are read as lists.

Deviation, on purpose: where nothing parses the official code draws ``random.choice`` among the
letters; we return ``parsed_pred=None`` and ``correct=False``. lmms-eval ≥ 0.7.3 copies these rules
verbatim (its ≤ 0.7.2 ``str(parsed_pred[0])`` flattening bug, issue #1436, is not reproduced).
"""

from __future__ import annotations

import ast

from evals.extract.mmmu import eval_open, parse_multi_choice_response, parse_open_response

MULTIPLE_CHOICE = "multiple-choice"


def gold_answers(answer) -> list[str]:
    """The gold answer(s) as a list; a string holding a list literal is parsed."""
    if isinstance(answer, (list, tuple)):
        return [str(a) for a in answer]
    text = str(answer)
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list):
            return [str(v) for v in value]
    return [text]


def mmmu(response: str, question_type: str, options: list[str], answer, flavor: str = "official") -> dict:
    """Parse one MMMU response and judge it.

    Returns ``{"parsed_pred": letter | list | None, "correct": bool}``; ``question_type`` is
    ``"multiple-choice"`` or anything else for open questions (``"open"``, ``"short-answer"``).
    """
    response = "" if response is None else str(response)
    if question_type == MULTIPLE_CHOICE:
        index2ans = {chr(ord("A") + i): str(o) for i, o in enumerate(options)}
        parsed = parse_multi_choice_response(response, index2ans, flavor)
        return {"parsed_pred": parsed, "correct": parsed is not None and parsed in gold_answers(answer)}
    parsed = parse_open_response(response)
    return {"parsed_pred": parsed, "correct": eval_open(gold_answers(answer), parsed)}
