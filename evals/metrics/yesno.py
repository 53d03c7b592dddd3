"""Yes/no metrics: :func:`yes_no` (re-exported), :func:`pope`, :func:`mme` — benchmarks.md §2.6–2.7.

POPE (``pope``) per flavor:

* official (``AoiDragon/POPE evaluate.py``): :func:`~evals.extract.yesno.pope_official` parsing (never
  abstains: "None", "No!" → yes); labels ``no`` → negative, anything else positive; yes_ratio =
  *predicted* yes / N. Precision/recall/F1 with a zero denominator raise ZeroDivisionError there; we
  return None for them.
* lmms-eval (``tasks/pope/utils.py``): no extraction, ``pred.lower().strip() == gt`` ("Yes." is
  wrong); precision/recall count only predictions that are exactly ``yes``/``no``; zero denominators →
  0; **yes_ratio is the ground-truth yes ratio** (≈0.5), as ``pope_aggregate_yes_ratio`` computes it.
* vlmevalkit (``yorn.py POPE_rating``): ``YOrN_Extraction``; ``Unknown`` counts as a predicted no and
  as wrong; zero denominators → 0. VLMEvalKit reports no yes-ratio; ours is predicted yes / N.

All values are fractions in [0, 1] (VLMEvalKit prints ×100).

MME (``mme``): per category and image (``question_id``; VLMEvalKit groups by ``image_path``), ``acc`` =
100·mean, ``acc+`` = 100·(all answers of the image right); category score = mean over images of
``acc + acc+`` (max 200); perception = sum of the 10 perception categories (max 2000), cognition = sum
of the 4 cognition categories (max 800, VLMEvalKit calls it "reasoning"). Flavors differ only in the
yes/no parser. The references assert exactly two questions per image; on a partial run we score the
questions present (acc+ = all present right).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from evals.extract.yesno import pope_official, yes_no, yorn_vlmevalkit
from evals.flavors import LMMS_EVAL, OFFICIAL, check_flavor

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
#: per-sample counts :func:`pope` sums: samples, true/false positives, false negatives, correct, yes-ratio terms
POPE_COUNTS = ("n", "tp", "fp", "fn", "correct", "yes_num", "yes_den")


def pope_counts(prediction: str | None, label: str, flavor: str = OFFICIAL) -> tuple[int, ...]:
    """One sample's :data:`POPE_COUNTS` under ``flavor`` (module docstring); :func:`pope` of a set is
    :func:`pope_values` of their sum."""
    gt = str(label).strip().lower()
    if flavor == OFFICIAL:
        pred = pope_official("" if prediction is None else str(prediction))
        positive = gt != "no"  # evaluate.py: label "no" → 0, anything else → 1
    elif flavor == LMMS_EVAL:
        pred = "" if prediction is None else str(prediction).lower().strip()
        positive = gt == "yes"
    else:
        pred = yorn_vlmevalkit("" if prediction is None else str(prediction)) or "unknown"
        positive = gt == "yes"
    said_yes = pred == "yes"
    negative = pred == "no" if flavor == LMMS_EVAL else not said_yes  # lmms-eval: only an exact "no" is negative
    correct = said_yes == positive if flavor == OFFICIAL else pred == gt  # official: (TP + TN)
    if flavor == LMMS_EVAL:  # the ground-truth yes ratio
        yes_num, yes_den = gt == "yes", gt in ("yes", "no")
    else:
        yes_num, yes_den = said_yes, True
    return 1, int(said_yes and positive), int(said_yes and not positive), int(negative and positive), int(correct), \
        int(yes_num), int(yes_den)


def pope_values(sums_BK: np.ndarray, flavor: str = OFFICIAL) -> dict[str, np.ndarray]:
    """accuracy, precision, recall, f1, yes_ratio (fractions) of ``[B, 7]`` summed :data:`POPE_COUNTS`, as ``[B]``
    arrays; an undefined value (zero denominator) is NaN for ``official`` (the reference raises) and 0 otherwise."""
    undefined = np.nan if flavor == OFFICIAL else 0.0
    n, tp, fp, fn, correct, yes_num, yes_den = np.asarray(sums_BK, dtype=np.float64).T

    def div(num, den):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), undefined)

    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    both = precision + recall  # NaN when either is undefined (official): f1 undefined too
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(both > 0, 2 * precision * recall / np.where(both > 0, both, 1.0), undefined)
    f1 = np.where(np.isnan(both), np.nan, f1)
    return {"accuracy": div(correct, n), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": div(yes_num, yes_den)}


def pope(predictions: list[str], labels: list[str], flavor: str = OFFICIAL) -> dict:
    """accuracy, precision, recall, f1, yes_ratio of yes/no predictions against ``yes``/``no`` labels (None where
    undefined)."""
    check_flavor(flavor)
    if len(predictions) != len(labels):
        raise ValueError(f"pope: {len(predictions)} predictions for {len(labels)} labels")
    counts = np.array([pope_counts(p, g, flavor) for p, g in zip(predictions, labels)], dtype=np.float64)
    sums = counts.sum(axis=0) if len(counts) else np.zeros(len(POPE_COUNTS))
    return {name: (None if np.isnan(v[0]) else float(v[0])) for name, v in pope_values(sums[None], flavor).items()}



def mme_answers(rows: list[dict], flavor: str = OFFICIAL) -> dict[str, dict[str, list[float]]]:
    """``{category: {question_id: [1.0 right / 0.0 wrong per question of that image]}}`` (rows as :func:`mme`)."""
    check_flavor(flavor)
    by_cat: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        gold = str(row["answer"]).lower().strip().replace(".", "")
        pred = yes_no(row.get("prediction"), flavor)
        by_cat[row["category"]][str(row["question_id"])].append(1.0 if pred == gold else 0.0)
    return by_cat


def mme(rows: list[dict], flavor: str = OFFICIAL) -> dict:
    """MME perception / cognition totals and per-category ``acc + acc+`` (see module docstring).

    ``rows``: dicts with ``question_id`` (the image), ``category``, ``prediction``, ``answer``.
    Returns ``{"perception", "cognition", "per_category": {cat: score}, "detail": {cat: {acc, acc_plus, images}}}``.
    """
    return mme_from_answers(mme_answers(rows, flavor))


def mme_from_answers(answers: dict[str, dict[str, list[float]]]) -> dict:
    """:func:`mme` of :func:`mme_answers`."""
    per_category, detail = {}, {}
    for cat, images in answers.items():
        accs = [100.0 * sum(s) / len(s) for s in images.values()]
        plus = [100.0 * float(all(s)) for s in images.values()]
        acc, acc_plus = sum(accs) / len(accs), sum(plus) / len(plus)
        per_category[cat] = acc + acc_plus
        detail[cat] = {"acc": acc, "acc_plus": acc_plus, "images": len(images)}
    return {
        "perception": sum(v for k, v in per_category.items() if k in MME_PERCEPTION),
        "cognition": sum(v for k, v in per_category.items() if k in MME_COGNITION),
        "per_category": per_category,
        "detail": detail,
    }
