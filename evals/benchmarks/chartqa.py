"""ChartQA (test: 1,250 human + 1,250 augmented) — benchmarks.md §1.1, §2.3.

Formats read:

* VLMEvalKit TSV ``ChartQA_TEST.tsv``: ``index``, ``image``, ``question``, ``answer`` (a ``split`` /
  ``category`` column, when present, is the human/augmented subset).
* Hugging Face ``lmms-lab/ChartQA`` (``data/test-*.parquet``): ``type`` (``human_test`` /
  ``augmented_test``), ``question``, ``answer``, ``image``.
* Original release: ``test/test_human.json`` + ``test/test_augmented.json`` (``[{imgname, query, label}]``)
  with the charts in ``test/png/``.

Prompt: lmms-eval ``question + "\\nAnswer the question with a single word."``; VLMEvalKit
``ImageVQADataset`` (``"\\nAnswer the question using a single word or phrase."``).
Metric: :func:`evals.metrics.relaxed_accuracy` — ``relaxed_accuracy`` overall and per subset.
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, mean_rows
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.benchmarks.prompts import SHORT_ANSWER_SUFFIX
from evals.errors import DatasetError
from evals.flavors import VLMEVALKIT, OFFICIAL, check_flavor
from evals.media import image_from_path, image_from_struct
from evals.metrics.relaxed import relaxed_accuracy
from evals.readers.files import find_files, load_json
from evals.readers.values import RowError, answers_list, text
from evals.sample import Sample

ORIGINAL_LAYOUT = "the ChartQA release: <split>/<split>_human.json + <split>/<split>_augmented.json + <split>/png/"
LMMS_SUFFIX = "\nAnswer the question with a single word."
_SUBSETS = ("human", "augmented")


class ChartQA(Benchmark):
    name = "chartqa"
    version = "chartqa-test/1"
    default_split = "test"
    primary_metric = "relaxed_accuracy"
    tsv_patterns = ("ChartQA_TEST.tsv", "ChartQA*.tsv")

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                self.hf_layout(("question", "answer", "image"), self._from_hf),
                Layout("chartqa-release", ORIGINAL_LAYOUT, self._release_files_exist, self._read_release)]

    def _sample(self, sample_id, split, question, answer_cell, subset, media, err):
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question or "", media=media,
                      targets=answers_list(answer_cell), category=subset, error=err)

    def _from_tsv(self, row, n, images, split):
        media, err = load_media(lambda: images.media(row))
        subset = text(row.get("split")) or text(row.get("category")) or text(row.get("type"))
        return self._sample(text(row["index"]), split, text(row.get("question")), row.get("answer"), subset, media, err)

    def row_id(self, row, number):
        return text(row.get("index")) or str(number)

    def _from_hf(self, row, n, root: Path, split):
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return self._sample(str(n), split, text(row.get("question")), row.get("answer"), text(row.get("type")), media, err)

    @staticmethod
    def _release_files(path: Path, split: str = "test") -> list[Path]:
        return find_files(path, tuple(f"{split}_{s}.json" for s in _SUBSETS))

    def _release_files_exist(self, path: Path) -> bool:
        return bool(find_files(path, tuple(f"*_{s}.json" for s in _SUBSETS)))

    def _read_release(self, path: Path, split: str):
        files = self._release_files(path, split)
        if not files:
            raise DatasetError(path, f"no {split}_human.json / {split}_augmented.json", ORIGINAL_LAYOUT)

        loaded = [(file, load_json(file, ORIGINAL_LAYOUT)) for file in files]  # file-level errors raise now
        for file, entries in loaded:
            if not isinstance(entries, list):
                raise DatasetError(file, "expected a JSON list of {imgname, query, label}", ORIGINAL_LAYOUT)

        def rows():
            for file, entries in loaded:
                subset = file.stem.split("_", 1)[1]
                for i, entry in enumerate(entries):
                    yield i, {"entry": entry, "subset": subset, "dir": file.parent}

        def convert(row, i):
            entry, subset = row["entry"], row["subset"]
            if not isinstance(entry, dict):
                raise RowError("entry is not an object")
            image = text(entry.get("imgname"))
            media, err = load_media(lambda: [image_from_path(row["dir"] / "png" / (image or ""))])
            return self._sample(f"{subset}/{i}", split, text(entry.get("query")), entry.get("label"),
                                f"{subset}_{split}", media, err)

        return self.convert_rows(rows(), convert, split)

    def prompt(self, sample, flavor):
        return sample.question + (SHORT_ANSWER_SUFFIX if flavor == VLMEVALKIT else LMMS_SUFFIX)

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        shown = prediction.strip() if flavor == VLMEVALKIT else prediction
        return shown, relaxed_accuracy(prediction, rec["targets"], flavor)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        return mean_rows(self.name, flavor, "relaxed_accuracy", rows) + count_rows(self.name, flavor, rows)


BENCHMARK = ChartQA()
