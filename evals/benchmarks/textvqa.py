"""TextVQA (validation, 5,000 questions × 10 answers) — benchmarks.md §1.1, §2.1.

Formats read:

* VLMEvalKit TSV ``TextVQA_VAL.tsv``: ``index``, ``image``, ``question``, ``answer`` (list literal of 10).
* Hugging Face ``lmms-lab/textvqa`` (``data/validation-*.parquet``): ``question_id``, ``question``,
  ``image``, ``answers``, ``image_id``, ``ocr_tokens``.
* Original release: ``TextVQA_0.5.1_val.json`` (``{"data": [{question_id, image_id, question,
  answers}]}``) with images ``train_images/<image_id>.jpg`` (validation images ship in the train folder).

Prompt: lmms-eval ``textvqa_doc_to_text`` — ``question.capitalize()`` (which also lower-cases the rest)
+ the short-answer post-prompt; VLMEvalKit ``ImageVQADataset`` — the question as stored + the same suffix.
Metric: :func:`evals.metrics.vqa_accuracy`.
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, mean_rows
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.benchmarks.prompts import SHORT_ANSWER_SUFFIX
from evals.errors import DatasetError
from evals.flavors import VLMEVALKIT, OFFICIAL, check_flavor
from evals.media import MediaError, image_from_path, image_from_struct
from evals.metrics.vqa import vqa_accuracy
from evals.readers.files import find_files, load_json
from evals.readers.values import answers_list, text
from evals.sample import Sample

ORIGINAL_LAYOUT = "the TextVQA release: TextVQA_0.5.1_val.json ({'data': [...]}) + train_images/<image_id>.jpg"
_RELEASE_SPLIT = {"validation": "val", "test": "test", "train": "train"}
_IMAGE_DIRS = ("train_images", "train_val_images/train_images", "test_images", "images", ".")


class TextVQA(Benchmark):
    name = "textvqa"
    version = "textvqa-val/1"
    default_split = "validation"
    primary_metric = "vqa_accuracy"
    tsv_patterns = ("TextVQA_VAL.tsv", "TextVQA*.tsv")

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                self.hf_layout(("question_id", "question", "answers", "image"), self._from_hf),
                Layout("textvqa-release", ORIGINAL_LAYOUT, lambda p: bool(find_files(p, ("TextVQA_*.json",))),
                       self._read_release)]

    def row_id(self, row, number):
        return text(row.get("question_id")) or text(row.get("index")) or f"row{number}"

    def _sample(self, sample_id, split, question, answers_cell, media, err, meta=None):
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question or "", media=media,
                      targets=answers_list(answers_cell, "answers"), meta=meta or {}, error=err)

    def _from_tsv(self, row, n, images, split):
        media, err = load_media(lambda: images.media(row))
        return self._sample(text(row["index"]), split, text(row.get("question")), row.get("answer"), media, err)

    def _from_hf(self, row, n, root: Path, split):
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return self._sample(text(row["question_id"]), split, text(row.get("question")), row.get("answers"), media, err,
                            {"image_id": text(row.get("image_id"))})

    def _read_release(self, path: Path, split: str):
        name = f"TextVQA_0.5.1_{_RELEASE_SPLIT.get(split, split)}.json"
        files = [path] if path.is_file() else find_files(path, (name,))
        if not files:
            raise DatasetError(path, f"no {name}", ORIGINAL_LAYOUT)
        blob = load_json(files[0], ORIGINAL_LAYOUT)
        entries = blob.get("data") if isinstance(blob, dict) else None
        if not isinstance(entries, list):
            raise DatasetError(files[0], "JSON has no 'data' list", ORIGINAL_LAYOUT)
        base = files[0].parent if path.is_file() else path

        def image(image_id):
            for folder in _IMAGE_DIRS:
                candidate = base / folder / f"{image_id}.jpg"
                if candidate.is_file():
                    return [image_from_path(candidate)]
            raise MediaError(f"image {image_id}.jpg not found under {base}/train_images")

        def convert(entry, i):
            image_id = text(entry.get("image_id"))
            media, err = load_media(lambda: image(image_id))
            return self._sample(text(entry.get("question_id")) or str(i), split, text(entry.get("question")),
                                entry.get("answers"), media, err, {"image_id": image_id})

        return self.convert_rows(enumerate(entries), convert, split)

    def prompt(self, sample, flavor):
        question = sample.question if flavor == VLMEVALKIT else sample.question.capitalize()
        return question + SHORT_ANSWER_SUFFIX

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        return prediction, vqa_accuracy(prediction, rec["targets"], flavor)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        return mean_rows(self.name, flavor, "vqa_accuracy", rows) + count_rows(self.name, flavor, rows)


BENCHMARK = TextVQA()
