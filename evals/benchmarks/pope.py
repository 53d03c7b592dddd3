"""POPE (9,000 = 3 × 3,000 COCO questions: random / popular / adversarial) — benchmarks.md §2.7.

Formats read:

* VLMEvalKit TSV ``POPE.tsv``: ``index``, ``image``, ``question``, ``answer`` (Yes/No), ``category``.
* Hugging Face ``lmms-lab/POPE`` (``data/test-*.parquet``): ``id``, ``question_id``, ``question``,
  ``answer``, ``image_source``, ``image``, ``category``.
* Original release: ``output/coco/coco_pope_{random,popular,adversarial}.json`` (JSON lines
  ``{question_id, image, text, label}``) with the COCO val2014 images in the dataset folder, in
  ``val2014/`` or ``images/``.

Prompt: lmms-eval ``question.strip()`` + the short-answer post-prompt; VLMEvalKit the question.
Scoring per row: official = POPE ``evaluate.py`` parsing (never abstains), lmms-eval = exact match,
vlmevalkit = ``YOrN_Extraction``. Aggregation: :func:`evals.metrics.pope` (×100) overall and per split,
plus ``f1_mean_over_splits`` — the number papers report (LLaVA-1.5). A row with an error is counted as
a wrong answer (its prediction is taken to be the opposite of the label).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evals.aggregate import count_rows, decode_rows, group_by, has_error, metric_row, traced_sums
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.benchmarks.prompts import SHORT_ANSWER_SUFFIX
from evals.errors import DatasetError
from evals.extract.yesno import pope_official, yorn_vlmevalkit
from evals.flavors import LMMS_EVAL, VLMEVALKIT, OFFICIAL, check_flavor
from evals.media import MediaError, image_from_path, image_from_struct
from evals.metrics.yesno import POPE_COUNTS, pope_counts, pope_values
from evals.readers.files import find_files, iter_jsonl
from evals.readers.values import RowError, text
from evals.sample import Sample

ORIGINAL_LAYOUT = ("the POPE release: coco_pope_{random,popular,adversarial}.json (JSON lines "
                   "{question_id, image, text, label}) + COCO val2014 images (folder, val2014/ or images/)")
_IMAGE_DIRS = (".", "val2014", "images", "coco/val2014", "COCO/val2014")
POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def _label(value) -> str:
    label = text(value)
    if label is None:
        raise RowError("missing answer")
    if label.strip().lower() not in ("yes", "no"):
        raise RowError(f"answer {label!r} is not yes/no")
    return label.strip().lower()


def extract(prediction: str, flavor: str) -> str | None:
    prediction = "" if prediction is None else str(prediction)
    if flavor == OFFICIAL:
        return pope_official(prediction)
    if flavor == LMMS_EVAL:
        pred = prediction.lower().strip()
        return pred if pred in ("yes", "no") else None
    return yorn_vlmevalkit(prediction)


class POPE(Benchmark):
    name = "pope"
    version = "pope-coco/1"
    default_split = "test"
    primary_metric = "f1"
    tsv_patterns = ("POPE.tsv",)

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                self.hf_layout(("question", "answer", "image", "category"), self._from_hf),
                Layout("pope-release", ORIGINAL_LAYOUT, lambda p: bool(find_files(p, ("coco_pope_*.json",), 4)),
                       self._read_release)]

    def _sample(self, sample_id, split, question, label, category, media, err, meta=None):
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question or "", media=media,
                      targets=[label], category=category, meta=meta or {}, error=err)

    def _from_tsv(self, row, n, images, split):
        label = _label(row.get("answer"))
        media, err = load_media(lambda: images.media(row))
        return self._sample(text(row["index"]), split, text(row.get("question")), label, text(row.get("category")),
                            media, err)

    def _from_hf(self, row, n, root: Path, split):
        label = _label(row.get("answer"))
        category = text(row.get("category"))
        sample_id = text(row.get("id")) or f"{category}/{text(row.get('question_id'))}"
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return self._sample(sample_id, split, text(row.get("question")), label, category, media, err,
                            {"question_id": text(row.get("question_id")), "image_source": text(row.get("image_source"))})

    def _read_release(self, path: Path, split: str):
        files = [path] if path.is_file() else find_files(path, ("coco_pope_*.json",), 4)
        if not files:
            raise DatasetError(path, "no coco_pope_*.json", ORIGINAL_LAYOUT)
        roots = [path if path.is_dir() else path.parent] + [f.parent for f in files]

        def image(name):
            for root in roots:
                for folder in _IMAGE_DIRS:
                    candidate = root / folder / name
                    if candidate.is_file():
                        return [image_from_path(candidate)]
            raise MediaError(f"COCO image {name} not found under {roots[0]} (or val2014/, images/)")

        def rows():
            for file in files:
                category = file.stem.replace("coco_pope_", "")
                for number, record, error in iter_jsonl(file):
                    yield number, {"category": category, "record": record, "error": error, "file": file.name}

        def convert(row, number):
            if row["error"]:
                raise RowError(f"{row['file']} {row['error']}")
            rec = row["record"]
            label = _label(rec.get("label"))
            media, err = load_media(lambda: image(str(rec.get("image") or "")))
            return self._sample(f"{row['category']}/{text(rec.get('question_id')) or number}", split,
                                text(rec.get("text")), label, row["category"], media, err,
                                {"question_id": text(rec.get("question_id"))})

        return self.convert_rows(rows(), convert, split)

    def row_id(self, row, number):
        if "record" in row:  # original release row
            return f"{row.get('category')}/line{number}"
        return text(row.get("index")) or text(row.get("id")) or str(number)

    def prompt(self, sample, flavor):
        return sample.question if flavor == VLMEVALKIT else sample.question.strip() + SHORT_ANSWER_SUFFIX

    def score(self, record, prediction, flavor=OFFICIAL):
        check_flavor(flavor)
        rec = self.record(record)
        got = extract(prediction, flavor)
        return got, float(got is not None and rec["targets"] == [got])

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)

        def counts(r):
            label = r["targets"][0] if r["targets"] else "no"
            pred = ("no" if label == "yes" else "yes") if has_error(r) else (r.get("prediction") or "")
            return pope_counts(pred, label, flavor)

        # VLMEvalKit's POPE.tsv stores a question shared by several splits once, with a comma-joined
        # category ("random,popular"); POPE_rating explodes it, so every split (and the overall
        # numbers) count it once per split — done here for all flavors.
        expanded = []
        for r in rows:
            cats = [c.strip() for c in str(r.get("category") or "").split(",") if c.strip()]
            expanded += [dict(r, category=c) for c in cats] or [r]
        # Every value is a function of summed counts (evals.metrics.pope); summed per resampling unit (block 0:
        # all rows, block 1 + i: split i) they let the bootstrap resample without re-reading predictions.
        splits = group_by(expanded, lambda r: r.get("category"))
        block = {c: 1 + i for i, c in enumerate(splits)}
        units: dict[str, int] = {}
        stats_UCK: list[np.ndarray] = []
        for r in expanded:
            u = units.setdefault(self.resampling_unit(r) or f"#{len(units)}", len(units))
            if u == len(stats_UCK):
                stats_UCK.append(np.zeros((1 + len(splits), len(POPE_COUNTS))))
            c = np.array(counts(r), dtype=np.float64)
            stats_UCK[u][0] += c
            if r.get("category") in block:
                stats_UCK[u][block[r["category"]]] += c
        K = len(POPE_COUNTS)
        stats_UK = (np.array(stats_UCK).reshape(len(stats_UCK), -1) if stats_UCK
                    else np.zeros((0, K * (1 + len(splits)))))

        def value(j: int, name: str):
            return lambda sums_BK: 100 * pope_values(sums_BK[:, j * K:(j + 1) * K], flavor)[name]

        out = []
        for j, (category, members) in enumerate([(None, expanded)] + list(splits.items())):
            for name in POPE_METRICS:
                v = float(value(j, name)(stats_UK.sum(axis=0)[None])[0])
                out.append(traced_sums(metric_row(self.name, flavor, name, category, None if np.isnan(v) else v,
                                                  len(members)), list(units), stats_UK, value(j, name)))
        f1s = [row["value"] for row in out if row["metric"] == "f1" and row["category"] is not None]
        if f1s and all(v is not None for v in f1s):
            def f1_mean(sums_BK):
                total = 0
                for j in range(1, len(f1s) + 1):
                    total = total + value(j, "f1")(sums_BK)
                return total / len(f1s)

            out.append(traced_sums(metric_row(self.name, flavor, "f1_mean_over_splits", None, sum(f1s) / len(f1s),
                                              len(rows)), list(units), stats_UK, f1_mean))
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = POPE()
