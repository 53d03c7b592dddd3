"""MMMU response parsing — official ``mmmu/utils/eval_utils.py`` (copied verbatim by lmms-eval).

Multiple choice (:func:`parse_multi_choice_response`): strip ``,.!?;:'`` from both ends, pad with
spaces; candidates ``(X)``; else `` X `` (lmms-eval's copy: ``X `` then ``X.``); else, for responses of
more than 5 words, option texts contained in the response; several candidates → the one occurring last.
Where nothing parses the official code calls ``random.choice`` (seeded 42 at import); **we return None**
instead, which scores as wrong — deterministic, and documented as the only deviation.

Open (:func:`parse_open_response`): lower-case, split into sentences, take the shortest tail after an
indicator (``could be / so / is / thus / therefore / final / answer / result``, and ``=`` in the last
sentence), add every number found, normalise (numbers → ``round(float, 2)``; one-character strings →
``[" a", "a "]``), de-duplicate. The reference uses ``list(set(...))`` whose order is hash-dependent; we
sort (strings, then numbers) so the stored ``parsed_pred`` is stable — matching is order-free.
"""

from __future__ import annotations

import re

from evals.flavors import LMMS_EVAL

_STRIP_CHARS = [",", ".", "!", "?", ";", ":", "'"]


def parse_multi_choice_response(response: str, index2ans: dict[str, str], flavor: str = "official") -> str | None:
    """The letter an MMMU multiple-choice response picks, or None (the reference would pick randomly)."""
    all_choices = list(index2ans)
    for char in _STRIP_CHARS:
        response = response.strip(char)
    response = " " + response + " "
    index_ans = True
    ans_with_brack = False
    candidates: list[str] = []
    for ch in all_choices:
        if f"({ch})" in response:
            candidates.append(ch)
            ans_with_brack = True
    if not candidates:
        pattern = "{} " if flavor == LMMS_EVAL else " {} "
        for ch in all_choices:
            if pattern.format(ch) in response:
                candidates.append(ch)
    if not candidates and flavor == LMMS_EVAL:
        for ch in all_choices:
            if f"{ch}." in response:
                candidates.append(ch)
    if not candidates and len(response.split()) > 5:
        for ch, text in index2ans.items():
            if text.lower() in response.lower():
                candidates.append(ch)
                index_ans = False
    if not candidates:
        return None  # NOTE: the reference returns random.choice(all_choices) here
    if len(candidates) == 1:
        return candidates[0]
    if index_ans and ans_with_brack:
        positions = [response.rfind(f"({c})") for c in candidates]
    elif index_ans:
        positions = [response.rfind(f" {c} ") for c in candidates]
    else:
        positions = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    # np.argmax: the first maximum wins ties.
    best = max(range(len(candidates)), key=lambda i: (positions[i], -i))
    return candidates[best]


def check_is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(text: str) -> list:
    """Numbers → ``[round(float, 2)]``; strings → ``[lower]`` or ``[" a", "a "]`` for one character."""
    text = text.strip()
    if check_is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    if len(text) == 1:
        return [" " + text, text + " "]
    return [text]


_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def extract_numbers(text: str) -> list[str]:
    return _NUM_COMMAS.findall(text) + _NUM_SCIENTIFIC.findall(text) + _NUM_SIMPLE.findall(text)


_INDICATORS = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    sub_responses = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = list(_INDICATORS)
    keys = []
    for index, resp in enumerate(sub_responses):
        if index == len(sub_responses) - 1:
            indicators.append("=")
        shortest = None
        for indicator in indicators:
            if indicator in resp:
                tail = resp.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in [":", ",", ".", "!", "?", ";", ":", "'"]:
            keys.append(shortest)
    return keys or [response]


def _sort_key(value) -> tuple:
    return (0, value, 0.0) if isinstance(value, str) else (1, "", float(value))


def parse_open_response(response: str) -> list:
    """Normalised candidate answers (strings and floats) of an open MMMU response, sorted."""
    keys = _key_subresponses(response)
    preds = list(keys)
    for key in keys:
        preds.extend(extract_numbers(key))
    normalised = []
    for pred in preds:
        normalised.extend(normalize_str(pred))
    return sorted(set(normalised), key=_sort_key)


def eval_open(gold: list[str], preds: list) -> bool:
    """Official ``eval_open``: a float equal to a normalised gold number, or a gold string contained in a string."""
    norm_answers: list = []
    for answer in gold:
        norm_answers.extend(normalize_str(answer))
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(ans, str) and ans in pred for ans in norm_answers):
                return True
        elif pred in norm_answers:
            return True
    return False
