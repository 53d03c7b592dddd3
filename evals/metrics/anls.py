"""Average Normalized Levenshtein Similarity (DocVQA, InfoVQA), benchmarks.md §2.2.

Per question: ``max_g s(g)`` with ``NL = lev(norm(g), norm(p)) / max(len(g), len(p))`` and
``norm(x) = " ".join(x.strip().lower().split())``.

* official — the DocVQA/RRC definition as packaged in ``anls`` (``anls.metrics.score.anls_score``):
  lengths of the *normalised* strings; ``s = 1 - NL if NL < τ else 0`` per answer, so NL = 0.5 scores 0.
* lmms-eval (``lmms_eval/api/metrics.py anls``, the Qwen-VL / RRC copy) and VLMEvalKit
  (``vqa_eval.py anls_compute`` + ``hit_calculate``): lengths of the *raw* strings
  (``len(x.upper())``, so padding spaces dilute the distance), threshold applied after taking the
  minimum NL, and ``1 - NL < τ → 0`` keeps NL = 0.5 as 0.5. These two are numerically identical.

Lengths are measured after ``.upper()`` in every reference, so ``ß`` counts as two characters.
"""

from __future__ import annotations

from evals.flavors import OFFICIAL, check_flavor


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit insert/delete/substitute costs."""
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for i, cb in enumerate(b, start=1):
        current = [i]
        for j, ca in enumerate(a, start=1):
            cost = 0 if ca == cb else 1
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost))
        previous = current
    return previous[-1]


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().split())


def _nl(dist: int, length: int) -> float:
    return 0.0 if length == 0 else dist / length


def anls(prediction: str, answers: list[str], flavor: str = OFFICIAL, threshold: float = 0.5) -> float:
    """ANLS of one prediction against its accepted answers, in [0, 1]; 0.0 for an empty answer list."""
    check_flavor(flavor)
    if not answers:
        return 0.0
    prediction = "" if prediction is None else str(prediction)
    pred = _norm(prediction)
    if flavor == OFFICIAL:
        best = 0.0
        for answer in answers:
            gold = _norm(str(answer))
            nl = _nl(levenshtein(gold, pred), max(len(gold.upper()), len(pred.upper())))
            best = max(best, 1.0 - nl if nl < threshold else 0.0)
        return best
    values = []
    for answer in answers:
        answer = str(answer)
        dist = levenshtein(_norm(answer), pred)
        values.append(_nl(dist, max(len(answer.upper()), len(prediction.upper()))))
    result = 1.0 - min(values)
    return 0.0 if result < threshold else result
