"""VQA accuracy (VQAv2 / TextVQA / VizWiz), benchmarks.md §2.1.

``acc = mean over the N leave-one-out subsets of min(1, #{other GT answers == pred} / 3)``; with ten
answers and m matches that is 0.3, 0.6, 0.9, 1.0 for m = 1, 2, 3, ≥4. Leave-one-out is by position (the
official script compares answer dicts that carry distinct ``answer_id``).

Flavors differ only in normalisation:

* official: whitespace clean-up always; punctuation + digit/article normalisation of GT *and*
  prediction **only if** ``len(set(gt)) > 1`` — with unanimous GT the comparison is raw
  (``Yes`` vs ten ``yes`` scores 0).
* lmms-eval: ``EvalAIAnswerProcessor`` on everything (lower-case, deletes ``,``/``?``).
* vlmevalkit: ``process_answer`` on everything (keeps a period after a digit).
"""

from __future__ import annotations

from evals.flavors import OFFICIAL, check_flavor
from evals.normalize import normalize_answer, process_digit_article, process_punctuation


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, answers: list[str], flavor: str = OFFICIAL) -> float:
    """VQA accuracy of one prediction against the list of human answers, in [0, 1].

    An empty answer list scores 0.0 (the references divide by zero there).
    """
    check_flavor(flavor)
    if not answers:
        return 0.0
    prediction = "" if prediction is None else str(prediction)
    if flavor == OFFICIAL:
        gts = [_clean(str(a)) for a in answers]
        pred = _clean(prediction)
        if len(set(gts)) > 1:
            gts = [process_digit_article(process_punctuation(g, flavor)) for g in gts]
            pred = process_digit_article(process_punctuation(pred, flavor))
    else:
        gts = [normalize_answer(str(a), flavor) for a in answers]
        pred = normalize_answer(prediction, flavor)
    accs = []
    for i in range(len(gts)):
        matches = sum(1 for j, g in enumerate(gts) if j != i and g == pred)
        accs.append(min(1.0, matches / 3.0))
    return sum(accs) / len(accs)
