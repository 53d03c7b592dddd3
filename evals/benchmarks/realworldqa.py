"""RealWorldQA (765 questions) — benchmarks.md §1.1, §2.4.

Formats read:

* VLMEvalKit TSV ``RealWorldQA.tsv``: ``index``, ``image``, ``question``, ``A``-``D``, ``answer``.
* Hugging Face ``lmms-lab/RealWorldQA`` (``data/test-*.parquet``): ``image``, ``question`` (already holds
  the options and "Please answer directly with only the letter of the correct option and nothing
  else."), ``answer`` (a letter, or a word/number for a few open questions).

Options are parsed from the question lines ``A. …`` for the HF copy. Prompt: lmms-eval — the stored
question (for TSV rows the same shape is rebuilt); VLMEvalKit ``ImageMCQDataset`` on the bare question.

Scoring — no scorer from xAI; ``official`` follows lmms-eval ``realworldqa_process_results``: letter
answers via ``extract_mcq_answer`` over A–D, other answers by ``pred.lower().strip().rstrip(".")``
equality. vlmevalkit: ``can_infer``.
"""

from __future__ import annotations

import re
from pathlib import Path

from evals.benchmarks.base import Benchmark, load_media
from evals.benchmarks.prompts import vlmevalkit_mcq_text
from evals.extract.choice import can_infer, extract_mcq_answer
from evals.flavors import OFFICIAL, VLMEVALKIT
from evals.media import image_from_struct
from evals.readers.values import RowError, option_columns, text
from evals.sample import Sample

INSTRUCTION = "Please answer directly with only the letter of the correct option and nothing else."
_OPTION_LINE = re.compile(r"^([A-Z])\.\s+(.*)$")


def split_question(question: str) -> tuple[str, dict[str, str]]:
    """The bare question and the ``A. …`` option lines of an HF RealWorldQA question."""
    bare, options = [], {}
    for line in question.splitlines():
        match = _OPTION_LINE.match(line.strip())
        if match:
            options[match.group(1)] = match.group(2).strip()
        elif not options and line.strip() != INSTRUCTION:
            bare.append(line)
    return "\n".join(bare).strip(), options


class RealWorldQA(Benchmark):
    name = "realworldqa"
    version = "realworldqa/1"
    default_split = "test"
    tsv_patterns = ("RealWorldQA.tsv",)

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                self.hf_layout(("question", "answer", "image"), self._from_hf)]

    def _sample(self, sample_id, split, question, options, answer, media, err, stored):
        if answer is None:
            raise RowError("missing answer")
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question, options=options,
                      media=media, targets=[answer.strip()], meta={"question_has_options": stored}, error=err)

    def _from_tsv(self, row, n, images, split):
        media, err = load_media(lambda: images.media(row))
        return self._sample(text(row["index"]), split, text(row.get("question")) or "", option_columns(row),
                            text(row.get("answer")), media, err, False)

    def row_id(self, row, number):
        return text(row.get("index")) or str(number)

    def _from_hf(self, row, n, root: Path, split):
        question = text(row.get("question")) or ""
        _, options = split_question(question)
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return self._sample(str(n), split, question, options, text(row.get("answer")), media, err, True)

    def prompt(self, sample, flavor):
        stored = sample.meta.get("question_has_options")
        if flavor == VLMEVALKIT:
            bare = split_question(sample.question)[0] if stored else sample.question
            return vlmevalkit_mcq_text(bare, sample.options)
        if stored or not sample.options:
            return sample.question.strip()
        lines = "\n".join(f"{k}. {v}" for k, v in sample.options.items())
        return f"{sample.question}\n{lines}\n{INSTRUCTION}"

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        target = rec["targets"][0] if rec["targets"] else ""
        if flavor == VLMEVALKIT:
            letter = can_infer(prediction, rec["options"]) if rec["options"] else None
            letter = letter if letter in rec["options"] else None
            return letter, float(letter is not None and letter == target)
        if target.upper() in ("A", "B", "C", "D"):
            letter = extract_mcq_answer(prediction, ["A", "B", "C", "D"])
            return letter, float(letter == target.upper())
        cleaned = prediction.lower().strip().rstrip(".")
        return cleaned or None, float(cleaned == target.lower())


BENCHMARK = RealWorldQA()
