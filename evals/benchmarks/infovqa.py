"""InfographicVQA (validation, 2,801 questions; the test split has no public answers) — benchmarks.md §1.1, §2.2.

Formats read:

* VLMEvalKit TSV ``InfoVQA_VAL.tsv``: ``index``, ``image``, ``question``, ``answer`` (a list literal).
* Hugging Face ``lmms-lab/DocVQA`` config ``InfographicVQA`` (``InfographicVQA/validation-*.parquet``):
  ``questionId``, ``question``, ``answers``, ``answer_type``, ``image``, ``image_url``, ``operation/reasoning``,
  ``ocr``, ``data_split``.
* Original release: ``infographicsVQA_val_v1.0_withQT.json`` = ``{"data": [{questionId, question,
  image_local_name, answers, answer_type, evidence, operation/reasoning, …}]}`` with the images in
  ``infographicsvqa_images/`` (or ``images/``, or next to the JSON).

Prompt and per-question score are DocVQA's (:mod:`evals.benchmarks.docvqa`): ``question + "\\nAnswer the
question using a single word or phrase."`` in both harnesses (lmms-eval ``tasks/infovqa``, VLMEvalKit
``ImageVQADataset``), :func:`evals.metrics.anls` per flavor. Aggregation: ``anls`` overall, plus, where the
files carry them, ``anls_by_answer_type`` / ``anls_by_evidence`` / ``anls_by_operation`` (the breakdowns of the
InfographicVQA paper; a question with several types counts in each).
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, mean_row, mean_rows
from evals.benchmarks.base import Layout, load_media
from evals.benchmarks.docvqa import DocVQA
from evals.flavors import OFFICIAL, check_flavor
from evals.media import MediaError, image_from_path, image_from_struct
from evals.readers.files import find_files
from evals.readers.values import is_missing, parse_list, text

ORIGINAL_LAYOUT = ("the InfographicVQA release: infographicsVQA_val_v1.0*.json ({'data': [...]}) + "
                   "infographicsvqa_images/ (or images/)")
_IMAGE_DIRS = ("infographicsvqa_images", "images", ".")
BREAKDOWNS = {"answer_type": "answer_type", "evidence": "evidence", "operation": "operation/reasoning"}


def _labels(value) -> list[str]:
    return [str(v) for v in parse_list(value) if not is_missing(v)]


class InfoVQA(DocVQA):
    name = "infovqa"
    version = "infovqa-val/1"
    tsv_patterns = ("InfoVQA_VAL.tsv", "InfoVQA*.tsv")

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                self.hf_layout(("questionId", "question", "answers", "image"), self._from_hf,
                               configs=("InfographicVQA",)),
                Layout("infovqa-release", ORIGINAL_LAYOUT,
                       lambda p: bool(find_files(p, ("infographicsVQA_*.json", "infographicVQA_*.json"))),
                       self._read_release)]

    @staticmethod
    def _meta(entry) -> dict:
        return {key: _labels(entry.get(column)) for key, column in BREAKDOWNS.items() if column in entry}

    def _from_hf(self, row, n, root: Path, split):
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return self._sample(text(row["questionId"]), split, text(row.get("question")), row.get("answers"), media,
                            err, self._meta(row))

    release_pattern = "infographic*VQA_{prefix}_v1.0*.json"
    release_layout = ORIGINAL_LAYOUT

    def _release_image(self, base: Path, entry: dict) -> list:
        name = str(entry.get("image_local_name") or "")
        for folder in _IMAGE_DIRS:
            if (base / folder / name).is_file():
                return [image_from_path(base / folder / name)]
        raise MediaError(f"image {name!r} not found in {base} ({', '.join(_IMAGE_DIRS[:2])})")

    def _release_meta(self, entry: dict) -> dict:
        return self._meta(entry)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        out = mean_rows(self.name, flavor, "anls", rows)
        for key in BREAKDOWNS:
            groups: dict[str, list[dict]] = {}
            for r in rows:
                for label in r["meta"].get(key) or []:
                    groups.setdefault(label, []).append(r)
            for label, members in sorted(groups.items()):
                out.append(mean_row(self.name, flavor, f"anls_by_{key}", label, members))
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = InfoVQA()
