"""Answer extractors: free-form model text → the answer a metric compares ("B", "yes", [numbers]).

Pure, deterministic functions, table-tested against the reference code (``tests/test_evals_extract*``).
Where a reference falls back to a random pick, ours returns None (unparsed).

* :func:`choice` — option letter for multiple-choice questions (flavors: see :mod:`evals.extract.choice`).
* :mod:`evals.extract.yesno` — yes/no (MME, POPE, VLMEvalKit YOrN).
* :mod:`evals.extract.mmmu` — MMMU multiple-choice and open answers.
* :mod:`evals.extract.video` — Video-MME and MVBench.
* :mod:`evals.extract.mathvista` — MathVista rule extraction and the LLM-extraction prompt, per flavor.
"""

from evals.extract.choice import can_infer, choice, extract_mcq_answer, mmbench_legacy_can_infer
from evals.extract.yesno import yes_no

__all__ = ["choice", "can_infer", "extract_mcq_answer", "mmbench_legacy_can_infer", "yes_no"]
