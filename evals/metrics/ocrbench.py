"""OCRBench v1 hit rule, benchmarks.md §2.8.

A hit if any GT answer is a **substring** of the prediction after ``lower().strip().replace("\\n", " ")``
on both. For handwritten mathematical expressions all spaces are removed (``strip().replace("\\n", " ")
.replace(" ", "")``) and the match is case-sensitive. The benchmark score is the hit count (max 1000).

* official (``Yuliang-Liu/MultimodalOCR`` eval script): the HME branch is keyed on
  ``dataset_name == "HME100k"``.
* lmms-eval (``tasks/ocrbench/utils.py``): keyed on ``dataset == "HME100k"``; the prediction is
  stripped first and, outside HME, full-width ASCII (U+FF01–U+FF5E) and the ideographic space are
  folded to ASCII (0.7.3).
* vlmevalkit (``vlmeval/dataset/utils/ocrbench.py``): keyed on the category (``question_type``)
  ``"Handwritten Mathematical Expression Recognition"``.

When ``dataset`` is unknown (VLMEvalKit TSVs carry only the category) every flavor falls back to the
category test.
"""

from __future__ import annotations

from evals.flavors import LMMS_EVAL, VLMEVALKIT, OFFICIAL, check_flavor

HME_DATASET = "HME100k"
HME_CATEGORY = "Handwritten Mathematical Expression Recognition"
CATEGORY_GROUPS = {
    "Text Recognition": ("Regular Text Recognition", "Irregular Text Recognition", "Artistic Text Recognition",
                         "Handwriting Recognition", "Digit String Recognition", "Non-Semantic Text Recognition"),
    "Scene Text-centric VQA": ("Scene Text-centric VQA",),
    "Doc-oriented VQA": ("Doc-oriented VQA",),
    "Key Information Extraction": ("Key Information Extraction",),
    "Handwritten Mathematical Expression Recognition": (HME_CATEGORY,),
}


def fold_fullwidth_ascii(text: str) -> str:
    """lmms-eval 0.7.3 ``_fold_fullwidth_ascii``: U+FF01–U+FF5E → ASCII, U+3000 → space."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xFF01 <= code <= 0xFF5E:
            out.append(chr(code - 0xFEE0))
        elif code == 0x3000:
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _is_hme(dataset: str | None, question_type: str | None, flavor: str) -> bool:
    if flavor == VLMEVALKIT or not dataset:
        return question_type == HME_CATEGORY
    return dataset == HME_DATASET


def ocrbench(prediction: str, answers: list[str], dataset: str | None, question_type: str | None,
             flavor: str = OFFICIAL) -> int:
    """1 if the prediction contains any answer under the flavor's rule, else 0."""
    check_flavor(flavor)
    pred = "" if prediction is None else str(prediction)
    if flavor == LMMS_EVAL:
        pred = pred.strip()
    if _is_hme(dataset, question_type, flavor):
        squeezed = pred.strip().replace("\n", " ").replace(" ", "")
        return int(any(str(a).strip().replace("\n", " ").replace(" ", "") in squeezed for a in answers))
    fold = fold_fullwidth_ascii if flavor == LMMS_EVAL else (lambda s: s)
    norm_pred = fold(pred).lower().strip().replace("\n", " ")
    return int(any(fold(str(a)).lower().strip().replace("\n", " ") in norm_pred for a in answers))
