"""Multiple-choice letter extraction without an LLM judge, benchmarks.md §2.4.

Three rules are implemented once each and selected by flavor:

* :func:`can_infer` — VLMEvalKit ``vlmeval/utils/matching_util.py`` ``can_infer`` =
  ``can_infer_option`` then ``can_infer_text``: replace ``.()[],:;!*#{}`` by spaces and split; a known
  refusal → ``Z``; exactly one option letter among the tokens **and** among the last 5 tokens → that
  letter; no letter but a ``Z`` token → ``Z``; then (PR #1552) the regex
  ``(?i)(?:correct\\s+)?answer\\s+is\\s+\\**([ABCD])\\**``; then option-text matching (reject answers
  longer than twice the total option text; exactly one option text contained → its letter).
* :func:`extract_mcq_answer` — lmms-eval ``tasks/_task_utils/mcq_extract.py``: candidates by format
  priority start(10) > end(9) > phrase(7) > ``(X)``(6) > ``X.``(5) > ``X:``(4) > ``X)``(3) > ``X ``(2) >
  any occurrence(0), later position wins within a format; case-sensitive.
* :func:`mmbench_legacy_can_infer` — the older VLMEvalKit rule that lmms-eval's MMBench evaluator
  (``tasks/mmbench/mmbench_evals.py MMBench_Evaluator.can_infer``) still uses.

``choice(response, choices, flavor)``: ``official`` and ``vlmevalkit`` → :func:`can_infer` (MMBench's
authors maintain VLMEvalKit; its ``exact_matching`` rule is the official judge-free MMBench rule);
``lmms-eval`` → :func:`extract_mcq_answer`. Benchmark-specific official extractors (MMMU, Video-MME,
MVBench) live in :mod:`evals.extract.mmmu` and :mod:`evals.extract.video`.

Every function returns a letter or None — never a random pick. ``Z`` (VLMEvalKit's "refused / none of
the options") is reported by :func:`can_infer` but mapped to None by :func:`choice`.
"""

from __future__ import annotations

import re

from evals.flavors import LMMS_EVAL, check_flavor

# --- VLMEvalKit can_infer -------------------------------------------------------------------------

_API_FAILURE = "Failed to obtain answer via API"
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_VERBOSE_ANSWER = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
_SPLIT_CHARS = ".()[],:;!*#{}"


def can_infer_option(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer_option``: a letter, ``"Z"``, or None (fall through to text matching)."""
    if _API_FAILURE in answer:
        return None
    for refusal in _REFUSALS:
        if refusal in answer:
            return "Z"
    mod = answer
    for c in _SPLIT_CHARS:
        mod = mod.replace(c, " ")
    tokens = mod.split()
    present = [c for c in choices if c in tokens]
    if len(present) == 1:
        letter = present[0]
        # NOTE: tokens.index finds the *first* occurrence, as the reference does.
        if tokens.index(letter) > len(tokens) - 5:
            return letter
    elif not present and "Z" in tokens:
        return "Z"
    match = _VERBOSE_ANSWER.search(answer)
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return None


def can_infer_text(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer_text``: the unique option whose text occurs in the answer (lower-cased)."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    hits = [k for k, v in choices.items() if str(v).lower() in answer]
    return hits[0] if len(hits) == 1 else None


def can_infer(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer``: a letter of ``choices``, ``"Z"`` (refusal), or None."""
    answer = str(answer)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)


# --- lmms-eval extract_mcq_answer -----------------------------------------------------------------

_DEFAULT_LETTERS = ["A", "B", "C", "D", "E", "F", "G", "H"]
_ANSWER_PHRASES = [
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is",
    "best option is", "the choice is", "choice is", "the correct choice is", "correct choice is",
    "i choose", "i select", "i pick", "my answer is", "my choice is",
    "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
]
_PRIORITY = {"start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4,
             "right_paren": 3, "space": 2, "fallback": 0}


def extract_mcq_answer(response: str, letters: list[str] | None = None) -> str | None:
    """lmms-eval's shared extractor; None where it returns ``""``."""
    if not response or not response.strip():
        return None
    letters = list(letters) if letters else _DEFAULT_LETTERS
    text = response.strip()
    for char in [",", ".", "!", "?", ";", ":", "'", '"']:
        text = text.strip(char)
    text = " " + text + " "
    candidates: list[tuple[str, int, str]] = []
    for fmt, pattern in (("parentheses", "({})"), ("period", "{}."), ("colon", "{}:"),
                         ("right_paren", "{})"), ("space", "{} ")):
        for ch in letters:
            token = pattern.format(ch)
            if token in text:
                candidates.append((ch, text.rfind(token), fmt))
    lower = text.lower()
    for phrase in _ANSWER_PHRASES:
        idx = lower.find(phrase)
        if idx != -1:
            after = idx + len(phrase)
            for ch in letters:
                pos = text.find(ch, after)
                if pos != -1:
                    candidates.append((ch, pos, "phrase"))
    stripped = text.strip()
    for ch in letters:
        if stripped.startswith(ch) and (len(stripped) == 1 or not stripped[1].isalpha()):
            candidates.append((ch, 0, "start"))
    for ch in letters:
        if stripped.endswith(ch) and (len(stripped) == 1 or not stripped[-2].isalpha()):
            candidates.append((ch, len(text) - 1, "end"))
    if not candidates:
        for ch in letters:
            if ch in text:
                candidates.append((ch, text.rfind(ch), "fallback"))
    if not candidates:
        return None
    # Stable sort, highest (priority, position) first — the reference's sort(reverse=True).
    candidates.sort(key=lambda c: (_PRIORITY[c[2]], c[1]), reverse=True)
    return candidates[0][0]


# --- lmms-eval MMBench evaluator (legacy VLMEvalKit rule) -----------------------------------------

_LEGACY_AFFIXES = [("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."),
                   (":", ""), (":", ","), (":", "."), (":", ")"), (":", ").")]


def mmbench_legacy_can_infer(answer: str, choices: dict[str, str], num_choice: int = 5) -> str | None:
    """``MMBench_Evaluator.can_infer`` from lmms-eval: whitespace tokens, letters ``A``..``E``.

    If ``A`` is a token of a response longer than 3 tokens it is treated as a possible article and
    the bare-token rule is skipped; then ``prefix+letter+suffix`` token patterns; then option text
    (no length limit in this older version).
    """
    answer = str(answer)
    if _API_FAILURE in answer:
        return None
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:num_choice]
    tokens = [x.strip() for x in answer.split()]

    def count(prefix="", suffix=""):
        return sum(1 for c in letters if prefix + c + suffix in tokens)

    if count() == 1 and not ("A" in tokens and len(tokens) > 3):
        for ch in letters:
            if ch in tokens:
                return ch
    for prefix, suffix in _LEGACY_AFFIXES:
        if count(prefix, suffix) == 1:
            for ch in letters:
                if prefix + ch + suffix in tokens:
                    return ch
    low = answer.lower()
    hits = [k for k, v in choices.items() if str(v).lower() in low]
    return hits[0] if len(hits) == 1 else None


# --- public entry point ---------------------------------------------------------------------------


def choice(response: str, choices: dict[str, str], flavor: str = "official") -> str | None:
    """The option letter a free-form response picks, or None if nothing can be inferred.

    ``choices`` maps letters to option texts. See the module docstring for the rule per flavor.
    """
    check_flavor(flavor)
    response = "" if response is None else str(response)
    if flavor == LMMS_EVAL:
        letter = extract_mcq_answer(response, list(choices) or None)
    else:
        letter = can_infer(response, choices)
    return letter if letter in choices else None
