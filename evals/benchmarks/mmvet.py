"""MM-Vet (218 questions; integrated capabilities) — benchmarks.md §1.1, §2.10.

Formats read:

* The authors' release (``mm-vet.zip``): ``mm-vet.json`` = ``{"v1_0": {"imagename", "capability": [...],
  "question", "answer"}, ...}`` with the images in ``images/`` beside it.
* VLMEvalKit TSV ``MMVet.tsv``: ``index``, ``image``, ``question``, ``answer``, ``category`` (capabilities joined by
  commas, e.g. ``rec,ocr``).
* Hugging Face ``lmms-lab/MMVet`` (``data/test-*.parquet``): ``question_id``, ``image``, ``question``, ``answer``,
  ``capability`` (comma-joined), ``image_source``.

Prompt: official and vlmevalkit → the question as published; lmms-eval → its default ``pre_prompt`` ("First please
perform reasoning, and think step by step to provide best answer to the following question: \\n\\n") + question.

Scoring: an LLM grader only (:mod:`evals.metrics.mmvet`); without a judge the rows stay unscored (``score`` null,
counted in ``unjudged``; the metric is null when nothing is scored). ``judge_max_tokens`` 128 is lmms-eval's (the
authors ask for 3 tokens, VLMEvalKit allows 2048; the grade is one number).
Aggregation (all three references agree): ``judge_score`` = mean correctness × 100 overall, per capability
integration (the category: the set of capabilities, in the order rec, ocr, know, gen, spat, math, joined by ``_``)
and per capability (``judge_score_by_capability``: every question that needs it).
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, has_error, mean_row, mean_scored_rows
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.errors import DatasetError
from evals.flavors import LMMS_EVAL, OFFICIAL, check_flavor
from evals.media import image_from_path, image_from_struct
from evals.metrics.mmvet import grading_prompt, parse_grade
from evals.readers.files import find_files, load_json
from evals.readers.tsv import TsvImages
from evals.readers.values import RowError, parse_list, text
from evals.sample import Sample

CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")
LMMS_PRE_PROMPT = ("First please perform reasoning, and think step by step to provide best answer to the following "
                   "question: \n\n")
RELEASE_LAYOUT = "the MM-Vet release: mm-vet.json ({id: {imagename, capability, question, answer}}) + images/"


def capabilities(value) -> list[str]:
    """Capabilities from a list or a comma-joined string, in the canonical order; unknown names raise RowError."""
    items = parse_list(value) if not isinstance(value, str) or value.strip().startswith("[") else value.split(",")
    caps = {str(c).strip() for c in items if str(c).strip()}
    unknown = sorted(caps - set(CAPABILITIES))
    if unknown:
        raise RowError(f"unknown capability {unknown}; expected some of {', '.join(CAPABILITIES)}")
    if not caps:
        raise RowError("no capability given")
    return [c for c in CAPABILITIES if c in caps]


class MMVet(Benchmark):
    name = "mmvet"
    version = "mmvet-v1/1"
    default_split = "test"
    primary_metric = "judge_score"
    tsv_patterns = ("MMVet.tsv", "MMVet*.tsv")
    judged = True
    judge_max_tokens = 128

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer"), self._from_tsv, filter_split=False),
                Layout("mmvet-release", RELEASE_LAYOUT, lambda p: bool(self._release_file(p)), self._read_release),
                self.hf_layout(("question_id", "question", "answer", "image"), self._from_hf)]

    def row_id(self, row, number):
        return text(row.get("question_id")) or text(row.get("id")) or text(row.get("index")) or f"row{number}"

    def _sample(self, sample_id, split, question, answer, caps, media, err, extra=None):
        if answer is None:
            raise RowError("missing answer")
        caps = capabilities(caps)
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question or "", media=media,
                      targets=[answer], category="_".join(caps), meta={"capabilities": caps, **(extra or {})},
                      error=err)

    def _from_tsv(self, row, n, images: TsvImages, split):
        media, err = load_media(lambda: images.media(row))
        return self._sample(text(row["index"]), split, text(row.get("question")), text(row.get("answer")),
                            text(row.get("category")) or text(row.get("capability")), media, err)

    def _from_hf(self, row, n, root: Path, split):
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return self._sample(text(row["question_id"]), split, text(row.get("question")), text(row.get("answer")),
                            row.get("capability"), media, err, {"image_source": text(row.get("image_source"))})

    @staticmethod
    def _release_file(path: Path) -> Path | None:
        found = find_files(path, ("mm-vet.json",))
        return found[0] if found else None

    def _read_release(self, path: Path, split: str):
        file = self._release_file(path)
        data = load_json(file, RELEASE_LAYOUT)
        if not isinstance(data, dict):
            raise DatasetError(file, "expected a JSON object {id: {imagename, capability, question, answer}}",
                               RELEASE_LAYOUT)
        images = file.parent / "images"

        def convert(row, n):
            if "broken" in row:
                raise RowError(f"entry is a {type(row['broken']).__name__}, not an object")
            name = text(row.get("imagename"))
            media, err = load_media(lambda: [image_from_path(images / (name or ""), "image")])
            return self._sample(row["id"], split, text(row.get("question")), text(row.get("answer")),
                                row.get("capability"), media, err, {"imagename": name})

        rows = ((n, dict(entry, id=str(key)) if isinstance(entry, dict) else {"id": str(key), "broken": entry})
                for n, (key, entry) in enumerate(data.items()))
        return self.convert_rows(rows, convert, split)

    def prompt(self, sample, flavor):
        check_flavor(flavor)
        return LMMS_PRE_PROMPT + sample.question if flavor == LMMS_EVAL else sample.question

    def score(self, record, prediction, flavor=OFFICIAL):
        check_flavor(flavor)
        return None, None  # only a judge scores MM-Vet

    def judge_prompt(self, record, prediction, flavor=OFFICIAL):
        rec, prediction = self.scoring_input(record, prediction, flavor)
        return grading_prompt(rec.get("question") or "", rec["targets"][0], prediction, flavor)

    def score_judged(self, record, prediction, reply, flavor=OFFICIAL):
        grade = parse_grade(reply, flavor)
        return (None, 0.0) if grade is None else (str(grade), grade)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        out = mean_scored_rows(self.name, flavor, "judge_score", rows)
        scored = [r for r in rows if has_error(r) or r.get("score") is not None]
        for cap in CAPABILITIES:
            members = [r for r in scored if cap in (r["meta"].get("capabilities") or [])]
            if members:
                out.append(mean_row(self.name, flavor, "judge_score_by_capability", cap, members))
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = MMVet()
