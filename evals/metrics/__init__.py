"""Metrics: pure, deterministic functions, each with a ``flavor`` in ``official | lmms-eval | vlmevalkit``.

=====================  ==============================================================================
function               reference per flavor (see each module's docstring for where they differ)
=====================  ==============================================================================
vqa_accuracy           VQA ``vqaEval.py`` / lmms-eval ``EvalAIAnswerProcessor`` / VLMEvalKit ``process_answer``
anls                   ``anls`` package / lmms-eval ``api.metrics.anls`` / VLMEvalKit ``anls_compute``
relaxed_accuracy       pix2struct / lmms-eval chartqa / VLMEvalKit ``relaxed_correctness`` (strips)
yes_no                 MME ``eval_tool`` / lmms-eval MME ``parse_pred_ans`` / VLMEvalKit ``YOrN_Extraction``
pope                   POPE ``evaluate.py`` / lmms-eval pope utils / VLMEvalKit ``POPE_rating``
mme                    MME ``eval_tool`` / lmms-eval ``mme_aggregate_results`` / VLMEvalKit ``MME_rating``
ocrbench               MultimodalOCR / lmms-eval ocrbench / VLMEvalKit ``OCRBench_eval``
circular               VLMEvalKit circular eval (official = vlmevalkit) / lmms-eval MMBench static
mmmu                   official MMMU ``eval_utils`` (no flavor; lmms-eval ≥0.7.3 copies it)
cider                  ``pycocoevalcap`` CIDEr-D without PTB tokenisation (no flavor)
mmvet                  LLM grader prompt + reply rule: MM-Vet evaluator / lmms-eval mmvet / VLMEvalKit MMVet
charxiv                LLM grader prompt + reply rule: CharXiv scripts / lmms-eval charxiv / VLMEvalKit CharXiv
=====================  ==============================================================================

Where a reference picks randomly (MMMU, MMBench judge fallback) ours returns None / incorrect.
"""

from evals.extract.yesno import yes_no
from evals.metrics.anls import anls
from evals.metrics.cider import cider
from evals.metrics.circular import circular
from evals.metrics.mmmu import mmmu
from evals.metrics.ocrbench import ocrbench
from evals.metrics.relaxed import relaxed_accuracy
from evals.metrics.vqa import vqa_accuracy
from evals.metrics.yesno import mme, pope

__all__ = ["vqa_accuracy", "anls", "relaxed_accuracy", "yes_no", "pope", "mme", "ocrbench", "circular",
           "mmmu", "cider"]
