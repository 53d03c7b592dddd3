"""DocVQA (validation, 5,349 questions) — benchmarks.md §1.1, §2.2.

Formats read:

* VLMEvalKit TSV ``DocVQA_VAL.tsv``: ``index``, ``image``, ``question``, ``answer`` (a list literal).
* Hugging Face ``lmms-lab/DocVQA`` config ``DocVQA`` (``DocVQA/validation-*.parquet``): ``questionId``,
  ``question``, ``question_types``, ``image``, ``docId``, ``answers``.
* Original release: ``val_v1.0.json`` (or ``val_v1.0_withQT.json``) = ``{"data": [{questionId, question,
  image: "documents/x.png", docId, answers, question_types}]}`` next to ``documents/``.

Prompt: ``question + "\\nAnswer the question using a single word or phrase."`` in both harnesses.
Metric: :func:`evals.metrics.anls` (official = the ``anls`` package). The test split has no public
answers: its rows carry an error.
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, mean_rows
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.benchmarks.prompts import SHORT_ANSWER_SUFFIX
from evals.errors import DatasetError
from evals.flavors import OFFICIAL, check_flavor
from evals.media import image_from_path, image_from_struct
from evals.metrics.anls import anls
from evals.readers.files import find_files, load_json
from evals.readers.values import answers_list, parse_list, text
from evals.sample import Sample

ORIGINAL_LAYOUT = "the DocVQA release: val_v1.0.json (or val_v1.0_withQT.json, {'data': [...]}) + documents/"
_RELEASE_PREFIX = {"validation": "val", "test": "test", "train": "train"}


class DocVQA(Benchmark):
    name = "docvqa"
    version = "docvqa-val/1"
    default_split = "validation"
    primary_metric = "anls"
    tsv_patterns = ("DocVQA_VAL.tsv", "DocVQA*.tsv")

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                self.hf_layout(("questionId", "question", "answers", "image"), self._from_hf, configs=("DocVQA",)),
                Layout("docvqa-release", ORIGINAL_LAYOUT, lambda p: bool(find_files(p, ("*_v1.0*.json",))),
                       self._read_release)]

    def row_id(self, row, number):
        return text(row.get("questionId")) or text(row.get("index")) or f"row{number}"

    def _sample(self, sample_id, split, question, answers_cell, media, err, meta):
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question or "", media=media,
                      targets=answers_list(answers_cell, "answers (the test split has no public ground truth)"),
                      meta=meta, error=err)

    def _from_tsv(self, row, n, images, split):
        media, err = load_media(lambda: images.media(row))
        return self._sample(text(row["index"]), split, text(row.get("question")), row.get("answer"), media, err, {})

    def _from_hf(self, row, n, root: Path, split):
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        meta = {"question_types": [str(t) for t in parse_list(row.get("question_types"))], "doc_id": text(row.get("docId"))}
        return self._sample(text(row["questionId"]), split, text(row.get("question")), row.get("answers"), media, err, meta)

    release_pattern = "{prefix}_v1.0*.json"  # the release's question file of a split ("val", "test", "train")
    release_layout = ORIGINAL_LAYOUT

    def _read_release(self, path: Path, split: str):
        """The original release: {"data": [...]} of one split, images found by `_release_image`."""
        pattern = self.release_pattern.format(prefix=_RELEASE_PREFIX.get(split, split))
        files = [path] if path.is_file() else find_files(path, (pattern,))
        if not files:
            raise DatasetError(path, f"no {pattern} for split {split!r}", self.release_layout)
        blob = load_json(files[0], self.release_layout)
        entries = blob.get("data") if isinstance(blob, dict) else None
        if not isinstance(entries, list):
            raise DatasetError(files[0], "JSON has no 'data' list", self.release_layout)
        base = files[0].parent

        def convert(entry, i):
            media, err = load_media(lambda: self._release_image(base, entry))
            return self._sample(text(entry.get("questionId")) or str(i), split, text(entry.get("question")),
                                entry.get("answers"), media, err, self._release_meta(entry))

        return self.convert_rows(enumerate(entries), convert, split)

    def _release_image(self, base: Path, entry: dict) -> list:
        return [image_from_path(base / str(entry.get("image") or ""))]

    def _release_meta(self, entry: dict) -> dict:
        return {"question_types": [str(t) for t in parse_list(entry.get("question_types"))],
                "doc_id": text(entry.get("docId"))}

    def prompt(self, sample, flavor):
        return sample.question + SHORT_ANSWER_SUFFIX

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        return prediction, anls(prediction, rec["targets"], flavor)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        return mean_rows(self.name, flavor, "anls", rows) + count_rows(self.name, flavor, rows)


BENCHMARK = DocVQA()
