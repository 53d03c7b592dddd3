"""ChartQA relaxed accuracy (5 % numeric tolerance), benchmarks.md §2.3.

``pix2struct/metrics.py relaxed_correctness(target, prediction)``: ``_to_float`` parses
``float(text.rstrip('%')) / 100`` for text ending in ``%`` and ``float(text)`` otherwise (None on
ValueError). If the prediction parses **and the target parses to a truthy value** (non-zero; NaN is
truthy) the answer is right when ``|p - t| / |t| <= 0.05``; otherwise it is a case-insensitive string
comparison. The score is the max over targets.

* official = pix2struct.
* lmms-eval (``tasks/chartqa/utils.py``) is the same function called with the right argument order:
  identical numbers.
* vlmevalkit (``vqa_eval.py process_line(method='relaxed_accuracy')``) strips the prediction first
  (``"12% "`` parses there and nowhere else).

Python ``float`` accepts ``" 12"``, ``"1_000"``, ``"1e3"``, ``"nan"``, ``"inf"``; ``"1,000"`` does not.
"""

from __future__ import annotations

from evals.flavors import VLMEVALKIT, OFFICIAL, check_flavor


def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(target: str, prediction: str, max_relative_change: float = 0.05) -> bool:
    """pix2struct's per-target rule (argument order matters: the change is relative to the target)."""
    prediction_float = _to_float(prediction)
    target_float = _to_float(target)
    if prediction_float is not None and target_float:
        return abs(prediction_float - target_float) / abs(target_float) <= max_relative_change
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, answers: list[str], flavor: str = OFFICIAL) -> float:
    """1.0 if the prediction is relaxed-correct for any answer, else 0.0 (0.0 for no answers)."""
    check_flavor(flavor)
    prediction = "" if prediction is None else str(prediction)
    if flavor == VLMEVALKIT:
        prediction = prediction.strip()
    return float(any(relaxed_correctness(str(t), prediction) for t in answers))
