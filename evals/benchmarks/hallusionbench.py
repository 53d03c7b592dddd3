"""HallusionBench (951 yes/no questions on figures, + 178 asked without one) — benchmarks.md §1.1.

Formats read:

* VLMEvalKit TSV ``HallusionBench.tsv`` (the 951 questions with a figure): ``index``, ``image``, ``question``,
  ``answer`` (Yes/No), ``category``, ``l2-category``; set, figure and question ids are parts 3, 4 and 5 of the
  ``_``-separated ``index``, as ``Hallusion_rating`` reads them.
* Hugging Face ``lmms-lab/HallusionBench`` (``data/image-*.parquet``; split ``non_image`` holds the questions
  asked without a figure): ``category`` (VD/VS), ``subcategory``, ``visual_input``, ``set_id``, ``figure_id``,
  ``sample_note``, ``question_id``, ``question``, ``gt_answer_details``, ``gt_answer`` (``1`` yes / ``0`` no),
  ``filename``, ``image``.
* Original release (tianyi-lab/HallusionBench): ``HallusionBench.json`` (a list of the records above, ``filename``
  ``./hallusion_bench/VD/illusion/0_0.png`` relative to the JSON, null without a figure) + the image folder.
  Split ``image`` (default) keeps questions with a figure, ``non_image`` those without, ``all`` every question.

Prompt: the question as stored, in every flavor (lmms-eval's pre/post prompts are empty; VLMEvalKit
``ImageBaseDataset.build_prompt``).

Scoring (per question, correct or not) — the authors judge with GPT-4; no flavor calls a judge:

* official: ``YOrN_Extraction`` stands in for the judge (yes / no / unknown); an unknown answer to a VS question
  without a figure counts as correct, as the authors' ``assign_correctness`` counts "uncertain" there;
* lmms-eval: its rule-based ``hb_aggregation_result_intern``: ``yes`` anywhere in the lower-cased answer → yes,
  else no;
* vlmevalkit: ``YOrN_Extraction`` with ``exact_matching`` (unknown = wrong).

Aggregation: :func:`evals.metrics.hallusion.hallusion` — ``aAcc``, ``fAcc``, ``qAcc`` overall, per category
(VD/VS; the TSV's ``category``) and ``*_by_subcategory`` (the TSV's ``l2-category``). For rows read from the HF or
original files, VLMEvalKit's ``l2-category`` key is taken to be ``subcategory``. A row with an error is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evals.aggregate import count_rows, decode_rows, group_by, metric_row, row_score, traced_sums
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.errors import DatasetError
from evals.extract.yesno import yes_substring, yorn_vlmevalkit
from evals.flavors import LMMS_EVAL, OFFICIAL, check_flavor
from evals.media import image_from_path, image_from_struct
from evals.metrics.hallusion import COUNTS, METRICS, hallusion, hallusion_counts, hallusion_values
from evals.readers.files import find_files, load_json
from evals.readers.values import RowError, text
from evals.sample import Sample

ORIGINAL_LAYOUT = "the HallusionBench release: HallusionBench.json (a list of records) + hallusion_bench/ images"
_ID_FIELDS = ("set_id", "figure_id", "question_id")
_RELEASE_SPLITS = {"image": lambda v: v != "0", "non_image": lambda v: v == "0", "all": lambda v: True}


def _answer(value) -> str:
    answer = text(value)
    label = {"1": "yes", "0": "no", "yes": "yes", "no": "no"}.get((answer or "").strip().lower().rstrip("."))
    if label is None:
        raise RowError("missing answer" if answer is None else f"answer {answer!r} is not yes/no (or 1/0)")
    return label


def extract(prediction: str, flavor: str) -> str | None:
    prediction = "" if prediction is None else str(prediction)
    return yes_substring(prediction) if flavor == LMMS_EVAL else yorn_vlmevalkit(prediction)


class HallusionBench(Benchmark):
    name = "hallusionbench"
    version = "hallusionbench/1"
    default_split = "image"
    primary_metric = "aAcc"
    tsv_patterns = ("HallusionBench.tsv", "HallusionBench*.tsv")
    unit_name = "question set"

    def resampling_unit(self, row):
        """fAcc groups a set's questions by figure and qAcc its figures by question; both groupings (every flavor's
        keys) lie within one (``l2_category``, ``set_id``), the unit the bootstrap draws (rows decoded)."""
        meta = row.get("meta") or {}
        return f"{meta.get('l2_category') or row.get('subcategory')}/{meta.get('set_id')}"

    def resampled_copy(self, row, copy):
        out = super().resampled_copy(row, copy)
        out["meta"] = dict(row.get("meta") or {}, set_id=f"{(row.get('meta') or {}).get('set_id')}~{copy}")
        return out

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                self.hf_layout(("category", "subcategory", "set_id", "figure_id", "question_id", "question",
                                "gt_answer", "image"), self._from_hf),
                Layout("hallusionbench-release", ORIGINAL_LAYOUT,
                       lambda p: bool(find_files(p, ("HallusionBench*.json",))), self._read_release)]

    def row_id(self, row, number):
        if "index" in row:
            return text(row.get("index")) or str(number)
        ids = [text(row.get(k)) for k in ("category", "subcategory") + _ID_FIELDS]
        return "_".join(i or "?" for i in ids) if any(ids) else str(number)

    def _from_tsv(self, row, n, images, split):
        index = text(row["index"]) or ""
        parts = index.split("_")
        if len(parts) < 6:
            raise RowError(f"index {index!r} does not hold set, figure and question ids (parts 3-5 of a_b_c_set_fig_q)")
        media, err = load_media(lambda: images.media(row))
        l2 = text(row.get("l2-category"))
        meta = dict(zip(_ID_FIELDS, parts[3:6]), l2_category=l2, visual_input=None)
        return Sample(sample_id=index, benchmark=self.name, split=split, question=text(row.get("question")) or "",
                      media=media, targets=[_answer(row.get("answer"))], category=text(row.get("category")),
                      subcategory=l2, meta=meta, error=err)

    def _sample(self, row, split, media, err):
        meta = {k: text(row.get(k)) for k in _ID_FIELDS + ("visual_input", "sample_note")}
        meta["l2_category"] = text(row.get("subcategory"))
        return Sample(sample_id=self.row_id(row, 0), benchmark=self.name, split=split,
                      question=text(row.get("question")) or "", media=media, targets=[_answer(row.get("gt_answer"))],
                      category=text(row.get("category")), subcategory=text(row.get("subcategory")), meta=meta,
                      error=err)

    def _from_hf(self, row, n, root: Path, split):
        has_figure = row.get("image") is not None and text(row.get("visual_input")) != "0"
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)] if has_figure else [])
        return self._sample(row, split, media, err)

    def _read_release(self, path: Path, split: str):
        if split not in _RELEASE_SPLITS:
            raise DatasetError(path, f"split {split!r} is not one of {sorted(_RELEASE_SPLITS)}", ORIGINAL_LAYOUT)
        files = [path] if path.is_file() else find_files(path, ("HallusionBench.json", "HallusionBench*.json"))
        records = load_json(files[0], ORIGINAL_LAYOUT)
        if not isinstance(records, list):
            raise DatasetError(files[0], "expected a JSON list of question records", ORIGINAL_LAYOUT)
        base = files[0].parent
        keep = _RELEASE_SPLITS[split]

        def convert(record, number):
            name = text(record.get("filename"))
            visual = text(record.get("visual_input")) != "0"
            media, err = load_media(lambda: [image_from_path(base / name)] if visual and name else [])
            if visual and not name:
                err = "question needs a figure but its record has no filename"
            return self._sample(record, split, media, err)

        rows = ((n, r) for n, r in enumerate(records)
                if isinstance(r, dict) and keep(text(r.get("visual_input")) or ""))
        return self.convert_rows(rows, convert, split)

    def prompt(self, sample, flavor):
        return sample.question

    def score(self, record, prediction, flavor=OFFICIAL):
        check_flavor(flavor)
        rec = self.record(record)
        got = extract(prediction, flavor)
        correct = got is not None and rec["targets"] == [got]
        if flavor == OFFICIAL and got is None:  # "uncertain" is right when there is no figure to look at
            correct = rec.get("category") == "VS" and str(rec["meta"].get("figure_id")) == "0"
        return got, float(correct)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)

        def items(members):
            return [dict(r["meta"], category=r.get("category"), subcategory=r.get("subcategory"),
                         correct=row_score(r) > 0) for r in members]

        groups = [("", None, rows)] if rows else []
        groups += [("", c, m) for c, m in group_by(rows, lambda r: r.get("category")).items()]
        groups += [("_by_subcategory", c, m) for c, m in group_by(rows, lambda r: r.get("subcategory")).items()]
        # The values are functions of counts that add up over question sets (every figure and question group lies
        # in one): per set and group of rows, those counts let the bootstrap resample sets without re-scoring.
        units: dict[str, int] = {}
        for r in rows:
            units.setdefault(self.resampling_unit(r), len(units))
        K = len(COUNTS)
        stats_UJK = np.zeros((len(units), len(groups), K))
        for j, (_, _, members) in enumerate(groups):
            for unit, in_unit in group_by(members, self.resampling_unit).items():
                stats_UJK[units[unit], j] = hallusion_counts(items(in_unit), flavor)
        stats_UK = stats_UJK.reshape(len(units), -1)
        out = []
        for j, (suffix, category, members) in enumerate(groups):
            values = hallusion(items(members), flavor)
            label = None if category is None else str(category)
            out += [traced_sums(metric_row(self.name, flavor, name + suffix, label, values[name], len(members)),
                                list(units), stats_UK,
                                lambda sums_BK, j=j, name=name: hallusion_values(sums_BK[:, j * K:(j + 1) * K])[name])
                    for name in METRICS]
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = HallusionBench()
