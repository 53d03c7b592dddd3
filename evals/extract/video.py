"""Answer extraction for the video multiple-choice benchmarks (Video-MME, MVBench).

Video-MME, ``extract_characters_regex``:

* official (``BradyFU/Video-MME evaluation/eval_your_results.py``): delete answer prefixes; a response
  of more than 10 words without any of ``ABCD`` → unanswered; else the **first** ``[ABCD]`` anywhere
  (so "Based on …, C" → B). Two list items lack a comma, so ``"The best option is"`` and
  ``"Best answer:"`` are never removed (their concatenations are) — kept as is.
* vlmevalkit (``vlmeval/dataset/utils/videomme.py``): the same plus ``"Answer:"`` and ``"Option:"``.
* lmms-eval (``tasks/videomme/utils.py``): :func:`evals.extract.choice.extract_mcq_answer` over ABCD.

MVBench:

* official / vlmevalkit ``check_ans(pred, gt)`` (OpenGVLab MVBench, copied in VLMEvalKit
  ``vlmeval/dataset/utils/mvbench.py``) with ``gt = "(B) text"``: the first whitespace token of the
  lower-cased prediction, periods removed, is a substring of ``"(b)"``, or ``"(b)"`` is a substring of
  it. An **empty prediction therefore counts as correct** (``"" in "(b)"``) — reproduced, documented.
  vlmevalkit with ``exact_matching`` then falls back to ``can_infer`` against the candidates.
* lmms-eval ``mcq_acc``: ``^([A-E])\\.\\s*(.+)$`` → letter; else VQA punctuation clean-up and the first
  ``\\b([A-E])\\b`` ignoring case (an article "a" becomes A).
"""

from __future__ import annotations

import re

from evals.extract.choice import can_infer, extract_mcq_answer

_VIDEOMME_PREFIXES_OFFICIAL = [
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is" "The correct option is",  # missing comma in the reference, kept on purpose
    "Best answer:" "Best option:",  # idem
]
_VIDEOMME_PREFIXES_VLMEVALKIT = _VIDEOMME_PREFIXES_OFFICIAL + ["Answer:", "Option:"]


def _videomme_regex(response: str, prefixes: list[str]) -> str | None:
    s = str(response).strip()
    for prefix in prefixes:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCD]", s):
        return None
    match = re.search(r"[ABCD]", s)
    return match[0] if match else None


def videomme_official(response: str) -> str | None:
    """Video-MME authors' ``extract_characters_regex``; None = unanswered."""
    return _videomme_regex(response, _VIDEOMME_PREFIXES_OFFICIAL)


def videomme_vlmevalkit(response: str) -> str | None:
    """VLMEvalKit's Video-MME ``extract_characters_regex``; None = unanswered."""
    return _videomme_regex(response, _VIDEOMME_PREFIXES_VLMEVALKIT)


def videomme_lmms_eval(response: str) -> str | None:
    """lmms-eval's Video-MME extraction (the shared MCQ extractor over A–D)."""
    return extract_mcq_answer(str(response), ["A", "B", "C", "D"])


def mvbench_first_token(prediction: str) -> str:
    """The token ``check_ans`` compares: first space-separated word of the lower-cased prediction."""
    return str(prediction).lower().strip().split(" ")[0]


def mvbench_check_ans(prediction: str, gt_letter: str) -> bool:
    """MVBench ``check_ans`` with ``gt = "(X) ..."``; see the module docstring for its quirks."""
    pred_option = mvbench_first_token(prediction)
    gt_option = f"({gt_letter.lower()})"
    return pred_option.replace(".", "") in gt_option or gt_option in pred_option


_MVBENCH_OPTION = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
_MVBENCH_LETTER = re.compile(r"\b([A-E])\b", re.IGNORECASE)
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def mvbench_lmms_eval(prediction: str) -> str:
    """lmms-eval ``mcq_acc.process``: an upper-case letter, or the cleaned lower-case text."""
    text = str(prediction)
    match = _MVBENCH_OPTION.match(text.strip())
    if match:
        return match.group(1).upper()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out, 32)
    out = out.strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = _MVBENCH_LETTER.search(out)
    return letter.group(1).upper() if letter else out


def mvbench_vlmevalkit(prediction: str, gt_letter: str, options: dict[str, str]) -> bool:
    """VLMEvalKit ``check_ans_with_model`` without a judge: ``check_ans`` or ``can_infer`` == GT."""
    return mvbench_check_ans(prediction, gt_letter) or can_infer(str(prediction), options) == gt_letter
