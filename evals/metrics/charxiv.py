"""CharXiv reasoning questions: the answer instructions, the LLM grader's prompt and the reading of its reply, per
flavor — princeton-nlp/CharXiv ``src/constants.py``, ``src/reasoning_utils.py``, ``src/get_stats.py``.

A question's *instruction category* (``inst_category`` in ``reasoning_val.json``, ``reasoning_a_type`` in the HF
files) picks the answer instructions appended to it and the grading rules: 1 text-in-chart, 2 text-in-general,
3 number-in-chart, 4 number-in-general (which also asks for the answer's number of decimal places).

``official``   the authors' scripts: :func:`question_prompt` (``REASONING_RESP_INST``, not stripped),
               :func:`grading_prompt` (``REASONING_GRADING_PREFIX`` + ``REASONING_GRADING_INST`` with question, ground
               truth and response filled in), the reply read as JSON ``{"extracted_answer", "score"}``; a score that is
               not 0 or 1, or a reply that does not parse (``"Failed to parse response"``, -1), counts 0.
``lmms-eval``  ``tasks/charxiv``: the question stripped; its copy of the prefix says "integer" where the authors'
               says "interger". NOTE: lmms-eval reads the category from ``reasoning_q_source`` (the question's
               source, 1-3) instead of ``reasoning_a_type``, so its prompts and grading rules follow the source;
               reproduced. A failed reply scores -1 and is averaged in as -1 (its aggregation is a plain mean);
               reproduced too.
``vlmevalkit`` ``vlmeval/dataset/charxiv.py``: the TSV's prebuilt ``grading_query`` (the authors' prompt with
               ``{PREDICTION}`` for the response), so the authors' prompt here; a reply without both keys, or one
               that does not parse, scores 0.0; the score is used as given.

NOTE: the references ask for ``response_format={"type": "json_object"}``; we do not (not every OpenAI-compatible
server offers it, ``ernie-vl serve`` refuses it), so a reply is read leniently: the whole reply as JSON, else the
text between its first ``{`` and last ``}`` (a fenced ``json`` block).
"""

from __future__ import annotations

import json

from evals.flavors import LMMS_EVAL, OFFICIAL, check_flavor
from evals.readers.values import RowError

ANSWER_TYPES = {1: "Text-in-Chart", 2: "Text-in-General", 3: "Number-in-Chart", 4: "Number-in-General"}
SOURCES = {1: "GPT-Sourced", 2: "GPT-Inspired", 3: "Completely Human"}
FAILED = "Failed to parse response"

_RESP_TEXT_IN_CHART = (
    "{}\n"
    "    * Your final answer must be grounded to some text that is explicitly written and relevant "
        "to the question in the chart.\n"
    "    * If you need to answer multiple terms, separate them with commas.\n"
    "    * Unless specified in the question (such as answering with a letter), you are required to "
        "answer the full names of subplots and/or labels by default.\n"
    "    "
)
_RESP_TEXT_IN_GENERAL = (
    "{}\n"
    "    * If there are options in the question, your final answer must conform to one of the options.\n"
    "    * If there are additional instructions in the question, follow them accordingly.\n"
    "    * If there are neither options nor additional instructions, you are allowed to respond "
        "with a short phrase only.\n"
    "    "
)
_RESP_NUMBER_IN_CHART = (
    "{}\n"
    "    * Your final answer must be grounded to a number that is exlicitly written and relevant to "
        "the question in the chart, even if it's an approximate value.\n"
    "    * You are allowed to extract numbers within some text when needed.\n"
    "    "
)
_RESP_NUMBER_IN_GENERAL = (
    "{}\n"
    "    {}\n"
    "    "
)
OFFICIAL_GRADING_PREFIX = (
    "\n"
    "You will be given a question, an ground truth answer and a model response. You need to extract "
        "the final answer from the model response, compare it with the ground truth answer, and then "
        "assign a binary score. Avoid providing explanations in your response. If there is no provided "
        "model response, please leave the extracted answer empty and give a score of 0. \n"
    "\n"
    "Your response must follow json formats with keys [extract_answer, score] where the value of "
        "the score is an interger in [0, 1]. You must follow the scoring rules:\n"
)
_GRADE_TEXT_IN_CHART = (
    "\n"
    "    ### Rules ###\n"
    "    * Give a score of 1 if and only if the final answer and the ground truth answer are "
        "referring to the same term. It's acceptable to have different grammar or form (e.g., α and "
        "alpha; $R^2_{t,h,v,m}$ and R^2_t,h,v,m). It's also acceptable to have different orders of the "
        "terms when question asks for multiple terms.\n"
    "    * Give a score of 0 if any term (e.g., ACC+ and ACC; P-101 and P=101) is different between "
        "the final answer and the ground truth.\n"
    "\n"
    "    ### Example 1 Starts ###\n"
    "    * Question: What is the name of the curve that intersects y=\\lambda exactly three times?\n"
    "    * Ground Truth: P56962\n"
    "    * Response: There is only one curve that intersects y=\\lambda exactly three times. The "
        "name of the curve is written as P55762.\n"
    "    \n"
    "    {\n"
    "        \"extracted_answer\": \"P55762\",\n"
    "        \"score\": 0\n"
    "    }\n"
    "    ### Example 1 Ends ###\n"
    "\n"
    "\n"
    "    ### Example 2 Starts ###\n"
    "    * Question: What is the letter of the subplot where all bars are above 35?\n"
    "    * Ground Truth: (b)\n"
    "    * Response: The letter of the subplot where all bars are above 35 is b.\n"
    "\n"
    "    {\n"
    "        \"extracted_answer\": \"b\",\n"
    "        \"score\": 1\n"
    "    }\n"
    "    ### Example 2 Ends ###\n"
    "\n"
    "    ### Your Turn ###\n"
    "    * Question: <|question|>\n"
    "    * Ground Truth: <|ground_truth|>\n"
    "    * Response: <|response|>\n"
    "\n"
    "    "
)
_GRADE_TEXT_IN_GENERAL = (
    "\n"
    "    ### Rules ###\n"
    "    * If there are predefined options in the question:\n"
    "        * Give a score of 1 if the final answer matches the ground truth answer exactly.\n"
    "        * Give a score of 0 if the final answer does not match the ground truth answer.\n"
    "    * If there are no predefined options in the question:\n"
    "        * Give a score of 1 if the final answer shares the same semantic meaning with the "
        "ground truth answer (e.g., \"increasing then decreasing\" and \"moving up then down\"; \"converge\" "
        "and \"move closer together\").\n"
    "        * Give a score of 0 if the final answer shares different semantic meanings from the "
        "ground truth answer (e.g., \"increasing then decreasing\" and \"remain constant\"; \"converge\" and "
        "\"diverge\").\n"
    "\n"
    "    ### Example 1 Starts ###\n"
    "    * Question: What is the trend of the red curve between t=10 and t=25?\n"
    "    * Ground Truth: increasing then decreasing\n"
    "    * Response: The red curve is increasing between t=10 and t=25.\n"
    "\n"
    "    {\n"
    "        \"extracted_answer\": \"increasing\",\n"
    "        \"score\": 0\n"
    "    }\n"
    "    ### Example 1 Ends ###\n"
    "\n"
    "    ### Example 2 Starts ###\n"
    "    * Question: What is the interval where the blue curve achieves the maximum value among [0, "
        "50], [50, 100], [100, 150], and [150, 200]?\n"
    "    * Ground Truth: [50, 100]\n"
    "    * Response: The interval where the blue curve achieves the maximum value is [50, 100].\n"
    "\n"
    "    {\n"
    "        \"extracted_answer\": \"[50, 100]\",\n"
    "        \"score\": 1\n"
    "    }\n"
    "    ### Example 2 Ends ###\n"
    "\n"
    "    ### Your Turn ###\n"
    "    * Question: <|question|>\n"
    "    * Ground Truth: <|ground_truth|>\n"
    "    * Response: <|response|>\n"
    "\n"
    "    "
)
_GRADE_NUMBER = (
    "\n"
    "    ### Rules ###\n"
    "    * Give a score of 1 if and only if the two numbers are exactly equal in values. It's "
        "acceptable to have different notations (e.g., 0.01 and 10^-2; 1500 and 1.5e3).\n"
    "    * Give a score of 0 if the two numbers are different in values.\n"
    "\n"
    "    ### Example 1 Starts ###\n"
    "    * Question: What is the value of the red curve at t=10?\n"
    "    * Ground Truth: 0.01\n"
    "    * Response: The value of the red curve at t=10 is 0.012.\n"
    "\n"
    "    {\n"
    "        \"extracted_answer\": \"0.012\",\n"
    "        \"score\": 0\n"
    "    }\n"
    "    ### Example 1 Ends ###\n"
    "\n"
    "    ### Example 2 Starts ###\n"
    "    * Question: What is the value of the blue curve at t=50?\n"
    "    * Ground Truth: 1500\n"
    "    * Response: The value of the blue curve at t=50 is 1.5e3.\n"
    "\n"
    "    {\n"
    "        \"extracted_answer\": \"1.5e3\",\n"
    "        \"score\": 1\n"
    "    }\n"
    "    ### Example 2 Ends ###\n"
    "\n"
    "    ### Your Turn ###\n"
    "    * Question: <|question|>\n"
    "    * Ground Truth: <|ground_truth|>\n"
    "    * Response: <|response|>\n"
    "\n"
    "    "
)
LMMS_GRADING_PREFIX = OFFICIAL_GRADING_PREFIX.replace("an interger in", "an integer in")
_RESPONSE_INSTRUCTIONS = {1: _RESP_TEXT_IN_CHART, 2: _RESP_TEXT_IN_GENERAL, 3: _RESP_NUMBER_IN_CHART,
                          4: _RESP_NUMBER_IN_GENERAL}
_GRADING_RULES = {1: _GRADE_TEXT_IN_CHART, 2: _GRADE_TEXT_IN_GENERAL, 3: _GRADE_NUMBER, 4: _GRADE_NUMBER}


def _category(value) -> int:
    try:
        category = int(value)
    except (TypeError, ValueError):
        category = None
    if category not in _RESPONSE_INSTRUCTIONS:
        raise RowError(f"instruction category {value!r} is not one of 1, 2, 3, 4")
    return category


def number_instruction(answer: str) -> str:
    """``get_number_instruction``: an exact integer, or as many decimal places as the answer has."""
    parts = answer.split(".")
    if len(parts) == 1:
        return "* Your final answer must be an exact integer."
    return f"* Your final answer must be a number with {len(parts[1])} decimal places."


def question_prompt(question: str, category, answer: str) -> str:
    """The question with the answer instructions of its category (``build_reasoning_queries``)."""
    category = _category(category)
    template = _RESPONSE_INSTRUCTIONS[category]
    return template.format(question, number_instruction(answer)) if category == 4 else template.format(question)


def grading_prompt(question: str, answer: str, response: str, category, flavor: str = OFFICIAL) -> str:
    """The grader's message (``build_reasoning_grading_queries``; placeholders filled in the references' order)."""
    check_flavor(flavor)
    prefix = LMMS_GRADING_PREFIX if flavor == LMMS_EVAL else OFFICIAL_GRADING_PREFIX
    rules = _GRADING_RULES[_category(category)]
    return prefix + rules.replace("<|question|>", question).replace("<|ground_truth|>", answer) \
        .replace("<|response|>", response)


def _json_object(reply: str):
    for text in (reply, reply[reply.find("{"): reply.rfind("}") + 1] if "{" in reply else ""):
        try:
            return json.loads(text)
        except ValueError:
            continue
    return None


def parse_grading(reply: str, flavor: str = OFFICIAL) -> tuple[str | None, float]:
    """``(extracted answer or None, score)`` from the grader's reply (see the module docstring)."""
    check_flavor(flavor)
    content = _json_object(reply)
    if not (isinstance(content, dict) and "extracted_answer" in content and "score" in content):
        return None, (-1.0 if flavor == LMMS_EVAL else 0.0)
    extracted = None if content["extracted_answer"] is None else str(content["extracted_answer"])
    score = content["score"]
    if flavor == OFFICIAL:
        return extracted, float(score) if score in (0, 1) else 0.0  # get_stats: anything else is invalid → 0
    if not isinstance(score, (int, float)) or score != score:
        return None, (-1.0 if flavor == LMMS_EVAL else 0.0)  # a score their mean cannot take: a failed reply
    return extracted, float(score)
