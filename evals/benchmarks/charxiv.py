"""CharXiv reasoning questions (validation: 1,000 charts, one question each) — benchmarks.md §2.10.

Formats read:

* The authors' release (github princeton-nlp/CharXiv + ``images.zip``): ``data/reasoning_val.json`` =
  ``{figure_id: {figure_id, query, answer, inst_category, qa_source}}``, optional ``data/image_metadata_val.json``
  (``category`` = arXiv subject, ``year``) and ``data/descriptive_val.json`` (``num_subplots``), and the charts as
  ``images/<figure_id>.jpg``. Split ``validation`` reads ``*_val.json``, ``test`` reads ``*_test.json`` (whose
  answers are withheld: those rows fail with "missing answer").
* Hugging Face ``princeton-nlp/CharXiv`` (``validation-*.parquet``): ``image``, ``figure_path``, ``category``,
  ``year``, ``num_subplots``, ``reasoning_q``, ``reasoning_a``, ``reasoning_a_type`` (the instruction category),
  ``reasoning_q_source``.

Prompt: the question with its category's answer instructions (:mod:`evals.metrics.charxiv`); lmms-eval strips it
(and picks the instructions by ``reasoning_q_source``, as its task does).
Scoring: an LLM grader only (JSON ``{"extracted_answer", "score"}``); without a judge the rows stay unscored
(``unjudged``; the metric is null when nothing is scored). ``judge_max_tokens`` 256 is the authors' first try.
Aggregation (``get_stats``): ``accuracy`` × 100 overall, per answer type (the category), by question source
(subcategory), subject, year and number of subplots.
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, mean_scored_rows, meta_field
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.errors import DatasetError
from evals.flavors import LMMS_EVAL, OFFICIAL, check_flavor
from evals.media import image_from_path, image_from_struct
from evals.metrics.charxiv import ANSWER_TYPES, SOURCES, grading_prompt, parse_grading, question_prompt
from evals.readers.files import find_files, load_json
from evals.readers.values import RowError, text
from evals.sample import Sample

RELEASE_LAYOUT = ("the CharXiv release: data/reasoning_<val|test>.json (+ image_metadata_*.json, descriptive_*.json) "
                  "and images/<figure_id>.jpg")
SUBJECTS = {"cs": "Computer Science", "econ": "Economics", "eess": "Electrical Engineering and Systems Science",
            "math": "Mathematics", "physics": "Physics", "q-bio": "Quantitative Biology",
            "q-fin": "Quantitative Finance", "stat": "Statistics"}
_SPLIT_SUFFIX = {"validation": "val", "val": "val", "test": "test"}


def subplot_group(num_subplots) -> str | None:
    """``NUMSUBPLOTS2SUBPLOTTYPE``: 1 / 2-4 / 5+ subplots."""
    try:
        n = int(num_subplots)
    except (TypeError, ValueError):
        return None
    return "1 Subplot" if n == 1 else "2-4 Subplots" if 2 <= n <= 4 else "5+ Subplots" if n >= 5 else None


def _int(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RowError(f"{what} {value!r} is not an integer") from None


class CharXiv(Benchmark):
    name = "charxiv"
    version = "charxiv-reasoning-val/1"
    default_split = "validation"
    judged = True
    judge_max_tokens = 256

    def layouts(self):
        return [Layout("charxiv-release", RELEASE_LAYOUT, lambda p: bool(find_files(p, ("reasoning_*.json",))),
                       self._read_release),
                self.hf_layout(("reasoning_q", "reasoning_a", "reasoning_a_type", "image"), self._from_hf)]

    def row_id(self, row, number):
        return text(row.get("figure_id")) or text(row.get("id")) or f"row{number}"

    def _sample(self, sample_id, split, question, answer, category, source, media, err, info):
        if answer is None:
            raise RowError("missing answer")
        category, source = _int(category, "instruction category"), _int(source, "question source")
        if category not in ANSWER_TYPES:
            raise RowError(f"instruction category {category} is not one of 1, 2, 3, 4")
        subject = text(info.get("category"))
        year = text(info.get("year"))
        meta = {"inst_category": category, "qa_source": source, "subject": SUBJECTS.get(subject or "", subject),
                "year": f"20{year}" if year and len(year) == 2 else year,
                "subplots": subplot_group(info.get("num_subplots"))}
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question or "", media=media,
                      targets=[answer], category=ANSWER_TYPES[category], subcategory=SOURCES.get(source),
                      meta=meta, error=err)

    def _from_hf(self, row, n, root: Path, split):
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        figure = text(row.get("figure_path"))
        sample_id = Path(figure).stem if figure else str(n)
        return self._sample(sample_id, split, text(row.get("reasoning_q")), text(row.get("reasoning_a")),
                            row.get("reasoning_a_type"), row.get("reasoning_q_source"), media, err, row)

    def _read_release(self, path: Path, split: str):
        suffix = _SPLIT_SUFFIX.get(split, split)
        found = find_files(path, (f"reasoning_{suffix}.json",))
        if not found:
            raise DatasetError(path, f"no reasoning_{suffix}.json for split {split!r}", RELEASE_LAYOUT)
        file = found[0]
        data = load_json(file, RELEASE_LAYOUT)
        if not isinstance(data, dict):
            raise DatasetError(file, "expected a JSON object {figure_id: {query, answer, inst_category, ...}}",
                               RELEASE_LAYOUT)
        extra = {}
        for name in (f"image_metadata_{suffix}.json", f"descriptive_{suffix}.json"):
            side = file.parent / name
            if side.is_file():
                for key, value in (load_json(side, RELEASE_LAYOUT) or {}).items():
                    if isinstance(value, dict):
                        extra.setdefault(str(key), {}).update(value)
        roots = [file.parent.parent / "images", file.parent / "images", path / "images"]
        images = next((r for r in roots if r.is_dir()), roots[0])

        def convert(row, n):
            if "broken" in row:
                raise RowError(f"entry is a {type(row['broken']).__name__}, not an object")
            figure = text(row.get("figure_id")) or row["id"]
            media, err = load_media(lambda: [image_from_path(images / f"{figure}.jpg", "image")])
            info = extra.get(row["id"], {})
            return self._sample(row["id"], split, text(row.get("query")), text(row.get("answer")),
                                row.get("inst_category"), row.get("qa_source"), media, err, info)

        rows = ((n, dict(entry, id=str(key)) if isinstance(entry, dict) else {"id": str(key), "broken": entry})
                for n, (key, entry) in enumerate(data.items()))
        return self.convert_rows(rows, convert, split)

    # --- prompting and scoring --------------------------------------------------------------------

    @staticmethod
    def _category(meta: dict, flavor: str) -> int:
        # NOTE: lmms-eval takes the instruction category from reasoning_q_source (see evals.metrics.charxiv)
        return meta["qa_source"] if flavor == LMMS_EVAL else meta["inst_category"]

    def prompt(self, sample, flavor):
        check_flavor(flavor)
        question = question_prompt(sample.question, self._category(sample.meta, flavor), sample.targets[0])
        return question.strip() if flavor == LMMS_EVAL else question

    def score(self, record, prediction, flavor=OFFICIAL):
        check_flavor(flavor)
        return None, None  # only a judge scores CharXiv

    def judge_prompt(self, record, prediction, flavor=OFFICIAL):
        rec = self.record(record)
        response = "" if prediction is None else str(prediction)
        response = response.strip() if flavor == LMMS_EVAL else response
        return grading_prompt(rec.get("question") or "", rec["targets"][0], response,
                              self._category(rec["meta"], flavor), flavor)

    def score_judged(self, record, prediction, reply, flavor=OFFICIAL):
        return parse_grading(reply, flavor)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        by = {"source": lambda r: r.get("subcategory"), **{k: meta_field(k) for k in ("subject", "year", "subplots")}}
        return mean_scored_rows(self.name, flavor, "accuracy", rows, by=by) + count_rows(self.name, flavor, rows)


BENCHMARK = CharXiv()
