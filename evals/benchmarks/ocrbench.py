"""OCRBench v1 (1,000 questions, score = hit count) — benchmarks.md §1.1, §2.8.

Formats read:

* VLMEvalKit TSV ``OCRBench.tsv``: ``index``, ``image``, ``question``, ``answer`` (list literal),
  ``category`` (the question type; no source-dataset column).
* Hugging Face ``echo840/OCRBench`` (``data/test-*.parquet``): ``dataset`` (source, e.g. ``HME100k``),
  ``question``, ``question_type``, ``answer`` (list), ``image``.
* Original release: ``OCRBench.json`` (``[{dataset_name, id, image_path, question, answers, type}]``)
  with ``OCRBench_Images/``.

Prompt: the question (lmms-eval strips it; no post-prompt in either harness).
Metric: :func:`evals.metrics.ocrbench`. Aggregation: ``score`` = hits (max 1000) overall and per
question type, ``score_by_group`` for the five reported groups (Text Recognition = 6 types, max 300),
and ``accuracy`` (%).
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, mean_rows, metric_row, row_score, total_sums, traced_sums
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.errors import DatasetError
from evals.flavors import VLMEVALKIT, OFFICIAL, check_flavor
from evals.media import MediaError, image_from_path, image_from_struct
from evals.metrics.ocrbench import CATEGORY_GROUPS, ocrbench
from evals.readers.files import find_files, load_json
from evals.readers.values import answers_list, text
from evals.sample import Sample

ORIGINAL_LAYOUT = "the OCRBench release: OCRBench.json + OCRBench_Images/"


class OCRBench(Benchmark):
    name = "ocrbench"
    version = "ocrbench-v1/1"
    default_split = "test"
    primary_metric = "score"
    tsv_patterns = ("OCRBench.tsv",)

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer", "category"), self._from_tsv, filter_split=False),
                self.hf_layout(("question", "question_type", "answer", "image"), self._from_hf),
                Layout("ocrbench-release", ORIGINAL_LAYOUT, lambda p: bool(find_files(p, ("OCRBench.json",))),
                       self._read_release)]

    def _sample(self, sample_id, split, question, answers_cell, qtype, dataset, media, err):
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question or "", media=media,
                      targets=answers_list(answers_cell), category=qtype, meta={"dataset": dataset}, error=err)

    def _from_tsv(self, row, n, images, split):
        media, err = load_media(lambda: images.media(row))
        return self._sample(text(row["index"]), split, text(row.get("question")), row.get("answer"),
                            text(row.get("category")), None, media, err)

    def row_id(self, row, number):
        return text(row.get("index")) or text(row.get("id")) or str(number)

    def _from_hf(self, row, n, root: Path, split):
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return self._sample(str(n), split, text(row.get("question")), row.get("answer"),
                            text(row.get("question_type")), text(row.get("dataset")), media, err)

    def _read_release(self, path: Path, split: str):
        files = [path] if path.is_file() else find_files(path, ("OCRBench.json",))
        if not files:
            raise DatasetError(path, "no OCRBench.json", ORIGINAL_LAYOUT)
        entries = load_json(files[0], ORIGINAL_LAYOUT)
        if not isinstance(entries, list):
            raise DatasetError(files[0], "expected a JSON list", ORIGINAL_LAYOUT)
        base = files[0].parent

        def image(name):
            for candidate in (base / name, base / "OCRBench_Images" / name):
                if candidate.is_file():
                    return [image_from_path(candidate)]
            raise MediaError(f"image not found: {base / 'OCRBench_Images' / name}")

        def convert(entry, i):
            media, err = load_media(lambda: image(str(entry.get("image_path") or "")))
            return self._sample(text(entry.get("id")) or str(i), split, text(entry.get("question")),
                                entry.get("answers"), text(entry.get("type")), text(entry.get("dataset_name")),
                                media, err)

        return self.convert_rows(enumerate(entries), convert, split)

    def prompt(self, sample, flavor):
        return sample.question if flavor == VLMEVALKIT else sample.question.strip()

    def score(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        hit = ocrbench(prediction, rec["targets"], rec["meta"].get("dataset"), rec.get("category"), flavor)
        return prediction, float(hit)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        def hits(metric, category, members):  # hit counts, with their per-unit sums for the bootstrap
            return traced_sums(metric_row(self.name, flavor, metric, category, sum(map(row_score, members)),
                                          len(members)), *total_sums(members, self.resampling_unit))

        out = [hits("score", None, rows)]  # hits, max 1000
        for group, types in CATEGORY_GROUPS.items():
            out.append(hits("score_by_group", group, [r for r in rows if r.get("category") in types]))
        for cat in sorted({r.get("category") for r in rows if r.get("category")}):
            out.append(hits("score", cat, [r for r in rows if r.get("category") == cat]))
        return out + mean_rows(self.name, flavor, "accuracy", rows)[:1] + count_rows(self.name, flavor, rows)


BENCHMARK = OCRBench()
