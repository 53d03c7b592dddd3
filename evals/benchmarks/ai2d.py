"""AI2D (test, 3,088 questions) — benchmarks.md §1.1, §2.4.

Formats read:

* VLMEvalKit TSV ``AI2D_TEST.tsv``: ``index``, ``image``, ``question``, ``A``-``D``, ``answer`` (letter).
* Hugging Face ``lmms-lab/ai2d`` (``data/test-*.parquet``): ``question``, ``options`` (list), ``answer``
  (the option *index* as a string, ``"0"``..``"3"``), ``image``.

Prompt: lmms-eval ``ai2d_doc_to_text`` (``question\\nA. …\\nB. …`` + the letter post-prompt); VLMEvalKit
``ImageMCQDataset``.

Scoring — the AI2D authors publish no VLM scorer, so ``official`` follows lmms-eval:
``MultiChoiceRegexFilter`` (``^\\s*([A-Z])\\.`` → the letter, else the raw response) then
``exact_match`` with ``ignore_case`` and ``ignore_punctuation`` (no strip: ``"B "`` ≠ ``B``).
vlmevalkit: ``can_infer``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from evals.benchmarks.base import Benchmark, load_media
from evals.benchmarks.prompts import LMMS_MCQ_SUFFIX, lmms_option_lines, vlmevalkit_mcq_text
from evals.extract.choice import can_infer
from evals.flavors import OFFICIAL, VLMEVALKIT
from evals.media import image_from_struct
from evals.readers.values import LETTERS, RowError, check_answer_letter, option_columns, options_from_list, parse_list, text
from evals.sample import Sample

_OPTION_AT_START = re.compile(r"^\s*([A-Z])\.")
_DROP_PUNCT = str.maketrans("", "", string.punctuation)


def lmms_filter(prediction: str) -> str:
    """lmms-eval AI2D ``MultiChoiceRegexFilter`` + ``exact_match`` normalisation (lower, no punctuation)."""
    match = _OPTION_AT_START.match(prediction)
    filtered = match.group(1) if match else prediction
    return filtered.lower().translate(_DROP_PUNCT)


class AI2D(Benchmark):
    name = "ai2d"
    version = "ai2d-test/1"
    default_split = "test"
    tsv_patterns = ("AI2D_TEST.tsv", "AI2D*.tsv")

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer", "A", "B"), self._from_tsv, filter_split=False),
                self.hf_layout(("question", "options", "answer", "image"), self._from_hf)]

    def _from_tsv(self, row, n, images, split):
        options = option_columns(row)
        answer = text(row.get("answer"))
        if answer is None:
            raise RowError("missing answer")
        media, err = load_media(lambda: images.media(row))
        return Sample(sample_id=text(row["index"]), benchmark=self.name, split=split,
                      question=text(row.get("question")) or "", options=options, media=media,
                      targets=[check_answer_letter(answer, options)], category=text(row.get("category")), error=err)

    def row_id(self, row, number):
        return text(row.get("index")) or str(number)

    def _from_hf(self, row, n, root: Path, split):
        options = options_from_list([str(o) for o in parse_list(row.get("options"))])
        answer = text(row.get("answer"))
        if answer is None:
            raise RowError("missing answer")
        if not answer.isdigit() or int(answer) >= len(options):
            raise RowError(f"answer index {answer!r} does not select one of {len(options)} options")
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return Sample(sample_id=str(n), benchmark=self.name, split=split, question=text(row.get("question")) or "",
                      options=options, media=media, targets=[LETTERS[int(answer)]], error=err)

    def prompt(self, sample, flavor):
        if flavor == VLMEVALKIT:
            return vlmevalkit_mcq_text(sample.question, sample.options)
        return f"{sample.question}\n{lmms_option_lines(sample.options)}{LMMS_MCQ_SUFFIX}"

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        target = rec["targets"][0] if rec["targets"] else ""
        if flavor == VLMEVALKIT:
            letter = can_infer(prediction, rec["options"])
            letter = letter if letter in rec["options"] else None
            return letter, float(letter is not None and letter == target)
        normalised = lmms_filter(prediction)
        letter = normalised.upper() if normalised.upper() in rec["options"] else None
        return letter, float(normalised == target.lower().translate(_DROP_PUNCT))


BENCHMARK = AI2D()
