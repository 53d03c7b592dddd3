"""The three scoring conventions every metric can reproduce.

``official``   the benchmark authors' own script where one exists (VQA eval, MMMU ``eval_utils``, POPE
               ``evaluate.py``, MME ``eval_tool``, the ``anls`` package, pix2struct, Video-MME
               ``eval_your_results.py``, MVBench ``check_ans``); where the authors publish no scorer the
               function's docstring says which reference stands in.
``lmms-eval``  EvolvingLMMs-Lab/lmms-eval 0.7.3 task utils.
``vlmevalkit`` open-compass/VLMEvalKit with ``exact_matching`` (no LLM judge).

Prompts: ``official`` and ``lmms-eval`` use the lmms-eval default prompt, ``vlmevalkit`` the VLMEvalKit
``build_prompt``.
"""

from __future__ import annotations

from evals.errors import FlavorError

OFFICIAL = "official"
LMMS_EVAL = "lmms-eval"
VLMEVALKIT = "vlmevalkit"
FLAVORS = (OFFICIAL, LMMS_EVAL, VLMEVALKIT)


def check_flavor(flavor: str) -> str:
    """Return ``flavor`` unchanged, or raise :class:`FlavorError` naming the accepted values."""
    if flavor not in FLAVORS:
        raise FlavorError(f"unknown flavor {flavor!r}; expected one of {', '.join(FLAVORS)}")
    return flavor
