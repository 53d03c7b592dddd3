"""ScienceQA-IMG (test, 2,017 questions with an image) — benchmarks.md §1.1, §2.4.

Formats read:

* VLMEvalKit TSV ``ScienceQA_TEST.tsv``: ``index``, ``image``, ``question``, ``hint``, ``A``-``E``,
  ``answer`` (letter), ``category``.
* Hugging Face ``lmms-lab/ScienceQA`` config ``ScienceQA-IMG`` (``ScienceQA-IMG/test-*.parquet``):
  ``image``, ``question``, ``choices`` (list), ``answer`` (int), ``hint``, ``subject``, ``topic``,
  ``grade``, ``category``, ``skill``.
* Original release: ``problems.json`` + ``pid_splits.json`` + ``images/<split>/<pid>/image.png`` (only
  problems with an image are read — the IMG subset).

Prompt: lmms-eval ``sqa_doc_to_text`` (``Context: {hint}\\n`` when there is a hint, ``A. …`` lines, the
letter post-prompt); VLMEvalKit ``ImageMCQDataset`` (``Hint:`` / ``Question:`` / ``Options:``).

Scoring — no VLM scorer from the authors, so ``official`` follows lmms-eval ``sqa_process_results``
(the LLaVA rule): the stripped prediction equals the letter ignoring case, or starts with
``<Capital>.``. vlmevalkit: ``can_infer``.
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, mean_rows, meta_field
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.benchmarks.prompts import LMMS_MCQ_SUFFIX, lmms_option_lines, vlmevalkit_mcq_text
from evals.errors import DatasetError
from evals.extract.choice import can_infer
from evals.flavors import VLMEVALKIT, OFFICIAL, check_flavor
from evals.media import MediaError, image_from_path, image_from_struct
from evals.readers.files import find_files, load_json
from evals.readers.values import LETTERS, RowError, check_answer_letter, option_columns, options_from_list, parse_list, text
from evals.sample import Sample

ORIGINAL_LAYOUT = "the ScienceQA release: problems.json + pid_splits.json + images/<split>/<pid>/image.png"


def sqa_letter(prediction: str, options: dict[str, str]) -> str | None:
    """The letter lmms-eval's ScienceQA rule reads from a prediction, or None."""
    pred = prediction.strip()
    if pred.upper() in options and len(pred) == 1:
        return pred.upper()
    if len(pred) >= 2 and pred[0].isupper() and pred[1] == ".":
        return pred[0] if pred[0] in options else None
    return None


class ScienceQA(Benchmark):
    name = "scienceqa"
    version = "scienceqa-img-test/1"
    default_split = "test"
    tsv_patterns = ("ScienceQA_TEST.tsv", "ScienceQA*.tsv")

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer", "A", "B"), self._from_tsv, filter_split=False),
                self.hf_layout(("question", "choices", "answer", "image"), self._from_hf, configs=("ScienceQA-IMG",)),
                Layout("scienceqa-release", ORIGINAL_LAYOUT, lambda p: bool(find_files(p, ("problems.json",), 2)),
                       self._read_release)]

    def _sample(self, sample_id, split, question, options, target, hint, media, err, subject=None, topic=None, grade=None):
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question or "", options=options,
                      media=media, targets=[target], category=subject, subcategory=topic,
                      meta={"hint": hint, "grade": grade}, error=err)

    def _from_tsv(self, row, n, images, split):
        options = option_columns(row)
        answer = text(row.get("answer"))
        if answer is None:
            raise RowError("missing answer")
        media, err = load_media(lambda: images.media(row))
        return self._sample(text(row["index"]), split, text(row.get("question")), options,
                            check_answer_letter(answer, options), text(row.get("hint")), media, err,
                            text(row.get("category")))

    def row_id(self, row, number):
        return text(row.get("index")) or text(row.get("pid")) or str(number)

    @staticmethod
    def _int_answer(value, options) -> str:
        answer = text(value)
        if answer is None:
            raise RowError("missing answer")
        if not answer.isdigit() or int(answer) >= len(options):
            raise RowError(f"answer index {answer!r} does not select one of {len(options)} choices")
        return LETTERS[int(answer)]

    def _from_hf(self, row, n, root: Path, split):
        options = options_from_list([str(c) for c in parse_list(row.get("choices"))])
        target = self._int_answer(row.get("answer"), options)
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return self._sample(str(n), split, text(row.get("question")), options, target, text(row.get("hint")), media,
                            err, text(row.get("subject")), text(row.get("topic")), text(row.get("grade")))

    def _read_release(self, path: Path, split: str):
        problems_file = find_files(path, ("problems.json",), 2)[0]
        base = problems_file.parent
        problems = load_json(problems_file, ORIGINAL_LAYOUT)
        splits_file = base / "pid_splits.json"
        if not splits_file.is_file():
            raise DatasetError(base, "pid_splits.json missing next to problems.json", ORIGINAL_LAYOUT)
        pids = load_json(splits_file, ORIGINAL_LAYOUT).get(split)
        if not isinstance(pids, list) or not isinstance(problems, dict):
            raise DatasetError(splits_file, f"no {split!r} list in pid_splits.json", ORIGINAL_LAYOUT)

        def image(pid, name):
            for candidate in (base / "images" / split / pid / name, base / split / pid / name):
                if candidate.is_file():
                    return [image_from_path(candidate)]
            raise MediaError(f"image not found: {base / 'images' / split / pid / name}")

        def rows():
            for i, pid in enumerate(pids):
                problem = problems.get(str(pid))
                if problem is None:
                    yield i, {"pid": str(pid), "_missing": True}
                elif problem.get("image"):
                    yield i, {"pid": str(pid), **problem}

        def convert(row, i):
            if row.get("_missing"):
                raise RowError(f"pid {row['pid']} listed in pid_splits.json but absent from problems.json")
            options = options_from_list([str(c) for c in parse_list(row.get("choices"))])
            target = self._int_answer(row.get("answer"), options)
            media, err = load_media(lambda: image(row["pid"], str(row["image"])))
            return self._sample(row["pid"], split, text(row.get("question")), options, target, text(row.get("hint")),
                                media, err, text(row.get("subject")), text(row.get("topic")), text(row.get("grade")))

        return self.convert_rows(rows(), convert, split)

    def prompt(self, sample, flavor):
        hint = sample.meta.get("hint")
        if flavor == VLMEVALKIT:
            return vlmevalkit_mcq_text(sample.question, sample.options, hint)
        context = f"Context: {hint}\n" if hint else ""
        return f"{context}{sample.question}\n{lmms_option_lines(sample.options)}{LMMS_MCQ_SUFFIX}"

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        target = rec["targets"][0] if rec["targets"] else ""
        if flavor == VLMEVALKIT:
            letter = can_infer(prediction, rec["options"])
        else:
            letter = sqa_letter(prediction, rec["options"])
        letter = letter if letter in rec["options"] else None
        return letter, float(letter is not None and letter == target)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        return (mean_rows(self.name, flavor, "accuracy", rows, by={"grade": meta_field("grade")})
                + count_rows(self.name, flavor, rows))


BENCHMARK = ScienceQA()
