"""Yes/no answer extraction, benchmarks.md §2.6–2.7.

* :func:`mme_official` — MME ``eval_tool/calculation.py parse_pred_ans`` after the caller's
  ``.lower()``: exactly ``yes``/``no``, else ``yes`` in the first 4 characters, else ``no`` in the first
  4 characters (so "not sure", "none", "nobody" → no; "the answer is yes" → none).
* :func:`mme_lmms_eval` — lmms-eval ``tasks/mme/utils.py parse_pred_ans`` ("brought from Otter"): also
  strips, deletes ``.``, and maps the single characters ``y``/``n``.
* :func:`yorn_vlmevalkit` — VLMEvalKit ``vlmeval/dataset/utils/yorn.py YOrN_Extraction``: lower-case,
  VLMEvalKit punctuation normalisation, split into words; ``yes`` without ``no`` → yes, ``no`` without
  ``yes`` → no, else unknown.
* :func:`pope_official` — POPE ``evaluate.py``: text before the first ``.``, commas deleted, split on
  single spaces; ``No``/``not``/``no`` as a word → no, **everything else → yes** (never None).
* :func:`yes_substring` — lmms-eval ``tasks/hallusion_bench/evaluate_hb.py hb_aggregation_result_intern``:
  ``yes`` anywhere in the lower-cased text → yes, **everything else → no** (never None; "eyes" → yes).

All return ``"yes"``, ``"no"`` or None (the references' ``other`` / ``Unknown``).
"""

from __future__ import annotations

from evals.flavors import LMMS_EVAL, OFFICIAL, VLMEVALKIT, check_flavor
from evals.normalize import process_punctuation


def mme_official(prediction: str) -> str | None:
    text = str(prediction).lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return None


def mme_lmms_eval(prediction: str) -> str | None:
    text = str(prediction).lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text)
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return None


def yorn_vlmevalkit(prediction: str) -> str | None:
    words = process_punctuation(str(prediction).lower(), VLMEVALKIT).split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return "yes"
    if has_no and not has_yes:
        return "no"
    return None


def pope_official(prediction: str) -> str:
    text = str(prediction)
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    if "No" in words or "not" in words or "no" in words:
        return "no"
    return "yes"


def yes_substring(prediction: str) -> str:
    return "yes" if str(prediction).lower().find("yes") != -1 else "no"


def yes_no(prediction: str, flavor: str = OFFICIAL) -> str | None:
    """``"yes"``, ``"no"`` or None for a free-form answer to a yes/no question.

    official = the MME authors' rule, lmms-eval = its MME copy, vlmevalkit = ``YOrN_Extraction``.
    (POPE's official rule, which never abstains, is :func:`pope_official`, used by
    :func:`evals.metrics.pope`.)
    """
    check_flavor(flavor)
    prediction = "" if prediction is None else str(prediction)
    if flavor == OFFICIAL:
        return mme_official(prediction)
    if flavor == LMMS_EVAL:
        return mme_lmms_eval(prediction)
    return yorn_vlmevalkit(prediction)
