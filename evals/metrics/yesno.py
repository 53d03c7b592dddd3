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

from evals.extract.yesno import pope_official, yes_no, yorn_vlmevalkit
from evals.flavors import LMMS_EVAL, OFFICIAL, check_flavor

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def _ratio(num: int, den: int, undefined):
    return num / den if den else undefined


def pope(predictions: list[str], labels: list[str], flavor: str = OFFICIAL) -> dict:
    """accuracy, precision, recall, f1, yes_ratio of yes/no predictions against ``yes``/``no`` labels."""
    check_flavor(flavor)
    if len(predictions) != len(labels):
        raise ValueError(f"pope: {len(predictions)} predictions for {len(labels)} labels")
    n = len(labels)
    gts = [str(label).strip().lower() for label in labels]
    if flavor == OFFICIAL:
        preds = [pope_official("" if p is None else str(p)) for p in predictions]
        positive = [g != "no" for g in gts]  # evaluate.py: label "no" → 0, anything else → 1
        undefined = None  # the reference raises ZeroDivisionError
    elif flavor == LMMS_EVAL:
        preds = ["" if p is None else str(p).lower().strip() for p in predictions]
        positive = [g == "yes" for g in gts]
        undefined = 0.0
    else:
        preds = [yorn_vlmevalkit("" if p is None else str(p)) or "unknown" for p in predictions]
        positive = [g == "yes" for g in gts]
        undefined = 0.0
    pairs = list(zip(preds, positive))
    tp = sum(1 for p, g in pairs if p == "yes" and g)
    fp = sum(1 for p, g in pairs if p == "yes" and not g)
    if flavor == LMMS_EVAL:
        fn = sum(1 for p, g in pairs if p == "no" and g)  # only an exact "no" counts as a negative
    else:
        fn = sum(1 for p, g in pairs if p != "yes" and g)
    if flavor == OFFICIAL:
        correct = sum(1 for p, g in pairs if (p == "yes") == g)  # (TP + TN)
    else:
        correct = sum(1 for p, g in zip(preds, gts) if p == g)
    if flavor == LMMS_EVAL:
        yes_ratio = _ratio(sum(g == "yes" for g in gts), sum(g in ("yes", "no") for g in gts), 0.0)
    else:
        yes_ratio = _ratio(sum(p == "yes" for p in preds), n, undefined)
    precision = _ratio(tp, tp + fp, undefined)
    recall = _ratio(tp, tp + fn, undefined)
    if precision is None or recall is None:
        f1 = None
    elif precision + recall == 0:
        f1 = None if flavor == OFFICIAL else 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "accuracy": _ratio(correct, n, undefined),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": yes_ratio,
    }


def mme(rows: list[dict], flavor: str = OFFICIAL) -> dict:
    """MME perception / cognition totals and per-category ``acc + acc+`` (see module docstring).

    ``rows``: dicts with ``question_id`` (the image), ``category``, ``prediction``, ``answer``.
    Returns ``{"perception", "cognition", "per_category": {cat: score}, "detail": {cat: {acc, acc_plus, images}}}``.
    """
    check_flavor(flavor)
    by_cat: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        gold = str(row["answer"]).lower().strip().replace(".", "")
        pred = yes_no(row.get("prediction"), flavor)
        by_cat[row["category"]][str(row["question_id"])].append(1.0 if pred == gold else 0.0)
    per_category, detail = {}, {}
    for cat, images in by_cat.items():
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
