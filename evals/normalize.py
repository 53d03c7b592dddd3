"""VQA answer normalisation, in the three variants the references ship.

All three descend from the official VQA ``vqaEval.py`` (``processPunctuation`` +
``processDigitArticle``); they differ in small ways that change scores (benchmarks.md §2.1):

* official (GT-Vision-Lab ``VQAEval``): period regex ``(?!<=\\d)(\\.)(?!\\d)`` — a typo for a look-behind,
  so *every* period not followed by a digit is deleted (``5.`` → ``5``); comma rule ``(\\d)(,)(\\d)``.
* lmms-eval (``EvalAIAnswerProcessor``, from MMF): first lower-cases, **deletes** ``,`` and ``?`` and
  splits ``'s`` → `` 's``; then the official punctuation/digit rules (comma rule written as a look-around).
* VLMEvalKit (``process_punctuation`` / ``_process_digit_article``): a real look-behind
  ``(?<!\\d)\\.(?!\\d)``, so a period after a digit survives (``5.`` stays ``5.``).

NOTE: all three pass ``re.UNICODE`` (=32) as the *count* argument of ``re.sub``, so only the first 32
periods are removed. We keep that: it is what the references compute.
"""

from __future__ import annotations

import re

from evals.flavors import LMMS_EVAL, OFFICIAL, VLMEVALKIT, check_flavor

PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = {
    OFFICIAL: re.compile(r"(?!<=\d)(\.)(?!\d)"),
    LMMS_EVAL: re.compile(r"(?!<=\d)(\.)(?!\d)"),
    VLMEVALKIT: re.compile(r"(?<!\d)\.(?!\d)"),
}
_COMMA_STRIP = {
    OFFICIAL: re.compile(r"(\d)(\,)(\d)"),
    LMMS_EVAL: re.compile(r"(?<=\d)(\,)+(?=\d)"),
    VLMEVALKIT: re.compile(r"(\d)(,)(\d)"),
}
_RE_UNICODE_AS_COUNT = 32  # see module NOTE

NUMBER_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}


def process_punctuation(text: str, flavor: str = OFFICIAL) -> str:
    """Delete or space out the VQA punctuation set, then strip sentence periods (see module doc)."""
    check_flavor(flavor)
    out = text
    # The condition looks at the *input* text for every symbol, as the references do.
    delete_all = _COMMA_STRIP[flavor].search(text) is not None
    for p in PUNCT:
        if delete_all or (p + " " in text or " " + p in text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP[flavor].sub("", out, _RE_UNICODE_AS_COUNT)


def process_digit_article(text: str) -> str:
    """Lower-case, map number words to digits, drop articles, restore contractions (same in all three)."""
    words = []
    for word in text.lower().split():
        word = NUMBER_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def _lmms_word_tokenize(text: str) -> str:
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def normalize_answer(text: str, flavor: str = OFFICIAL) -> str:
    """The full per-answer normalisation one flavor applies before VQA matching.

    official:   whitespace clean-up + punctuation + digit/article (the *caller* decides whether to
                apply it — the official script only normalises when the GT answers disagree).
    lmms-eval:  ``EvalAIAnswerProcessor.__call__``.
    vlmevalkit: ``process_answer``.
    """
    check_flavor(flavor)
    if flavor == LMMS_EVAL:
        text = _lmms_word_tokenize(text)
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text, flavor))
