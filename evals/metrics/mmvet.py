"""MM-Vet: the LLM grader's prompt and the reading of its reply, per flavor — benchmarks.md §2.10.

MM-Vet has no rule-based score: an LLM compares the prediction with the ground truth (``<AND>`` / ``<OR>`` lists)
and answers a correctness in ``0.0 .. 1.0``. The three references use the same few-shot table with small
differences:

``official``   yuweihao/MM-Vet ``mm-vet_evaluator.py``: ``prompt + "\\n" + " | ".join([question, gt, pred, ""])``;
               reply → ``content.split(" ")[0].strip()`` as a float in [0, 1].
``lmms-eval``  ``tasks/mmvet/utils.py``: the table header reads ``gpt_query_prompt | Ground truth | ...`` and has no
               blank line before it; ``f"{MM_VET_PROMPT}\\n{question} | {gt} | {pred} |"``; same reply rule.
``vlmevalkit`` ``vlmeval/dataset/utils/mmvet.py`` ``build_mmvet_gpt4_prompt``: the text wrapped over more lines,
               same join as official; reply → ``float(reply)`` of the whole reply, in [0, 1].

``gt`` is the answer with ``<AND>`` / ``<OR>`` spaced out (``" <AND> "``). A reply that does not parse scores 0.0,
the value every reference ends with after its retries. NOTE: the references then re-ask at higher temperatures
(official also with an extra "Predict the correctness of the answer (digit): " line); we ask once, greedily, so
that the reply can be cached and the score reproduced.
"""

from __future__ import annotations

from evals.flavors import LMMS_EVAL, OFFICIAL, VLMEVALKIT, check_flavor

_INTRO = ("Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. "
          "<AND> in the ground truth means it is totally right only when all elements in the ground truth are "
          "present in the prediction, and <OR> means it is totally right when any one element in the ground truth "
          "is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, "
          "0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.")
_MEME = ("This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. "
         "Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered "
         "in ice and snow. The meme is saying that the person has trust issues because the names of these countries "
         "do not accurately represent their landscapes.")
_ROWS = (
    "--- | --- | --- | ---",
    "What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0",
    "What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5",
    "What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5",
    "What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5",
    "What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0",
    f"Can you explain this meme? | {_MEME} | The meme talks about Iceland and Greenland. It's pointing out that "
    "despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4",
    f"Can you explain this meme? | {_MEME} | The meme is using humor to point out the misleading nature of "
    "Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is "
    "mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that "
    "these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected "
    "contrast between the names of the countries and their actual physical characteristics. | 1.0",
)
_TABLE = "\n".join(_ROWS) + "\n"
OFFICIAL_PROMPT = f"{_INTRO}\n\nQuestion | Ground truth | Prediction | Correctness\n{_TABLE}"
LMMS_PROMPT = f"{_INTRO}\ngpt_query_prompt | Ground truth | Prediction | Correctness\n{_TABLE}"
# VLMEvalKit wraps the same text over more lines (and starts with a newline)


def _vlmevalkit_prompt() -> str:
    out = "\n" + _INTRO.replace("score for the prediction. <AND>", "score for the prediction.\n<AND>")
    for before, after in (("totally right only", "totally right\nonly"),
                          ("prediction, and <OR>", "prediction,\nand <OR>"),
                          ("in the prediction. The", "in the prediction.\nThe"),
                          ("(totally right). Just", "(totally right).\nJust")):
        out = out.replace(before, after)
    table = _TABLE
    for before, after in (("countries Iceland", "countries\nIceland"), ("landscapes, while", "landscapes,\nwhile"),
                          ("issues because", "issues\nbecause"), ("landscapes. | The", "landscapes. |\nThe"),
                          ("names, Iceland is not", "names,\nIceland is not"), ("names. Iceland,", "names.\nIceland,"),
                          ("snow. The text", "snow.\nThe text"), ("suggest that", "suggest\nthat"),
                          ("confusion. The humor", "confusion.\nThe humor"),
                          ("countries and their", "countries\nand their")):
        table = table.replace(before, after)
    return f"{out}\n\nQuestion | Ground truth | Prediction | Correctness\n{table}"


VLMEVALKIT_PROMPT = _vlmevalkit_prompt()


def spaced_answer(answer: str) -> str:
    """The ground truth as every reference shows it: ``<AND>`` / ``<OR>`` with a space on each side."""
    return answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")


def grading_prompt(question: str, answer: str, prediction: str, flavor: str = OFFICIAL) -> str:
    """The grader's user message for one answer (see the module docstring)."""
    check_flavor(flavor)
    gt = spaced_answer(answer)
    if flavor == LMMS_EVAL:
        return f"{LMMS_PROMPT}\n{question} | {gt} | {prediction} |"
    head = VLMEVALKIT_PROMPT if flavor == VLMEVALKIT else OFFICIAL_PROMPT
    return head + "\n" + " | ".join([question, gt, prediction, ""])


def parse_grade(reply: str, flavor: str = OFFICIAL) -> float | None:
    """The correctness in [0, 1] the grader answered, or None when the reply is not one."""
    check_flavor(flavor)
    token = reply if flavor == VLMEVALKIT else reply.split(" ")[0].strip()
    try:
        value = float(token)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None
