"""MME (2,374 yes/no questions = 1,187 image pairs) — benchmarks.md §1.1, §2.6.

Formats read:

* VLMEvalKit TSV ``MME.tsv``: ``index``, ``image``, ``question``, ``answer`` (Yes/No), ``category``,
  ``image_path`` (the pair key).
* Hugging Face ``lmms-lab/MME`` (``data/test-*.parquet``): ``question_id`` (``code_reasoning/0020.png``,
  the pair key), ``image``, ``question``, ``answer``, ``category``.
* Original release ``MME_Benchmark_release_version/<category>/``: either ``images/<name>.jpg`` with
  ``questions_answers_YN/<name>.txt`` or ``<name>.png`` next to ``<name>.txt``; each txt holds two lines
  ``question<TAB>answer``.

Prompt: lmms-eval ``tasks/mme/utils.py mme_doc_to_text`` (strip, drop " Please answer yes or no.", add
the short-answer post-prompt); VLMEvalKit: the question as stored.

Scoring: :func:`evals.metrics.yes_no` per flavor; aggregation :func:`evals.metrics.mme` —
``perception`` (max 2000), ``cognition`` (max 800), per-category ``score`` = acc + acc+ (max 200).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evals.aggregate import count_rows, decode_rows, has_error, metric_row, traced_sums
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.benchmarks.prompts import SHORT_ANSWER_SUFFIX
from evals.extract.yesno import yes_no
from evals.flavors import VLMEVALKIT, OFFICIAL, check_flavor
from evals.media import MediaError, image_from_path, image_from_struct
from evals.metrics.yesno import MME_COGNITION, MME_PERCEPTION, mme_answers, mme_from_answers
from evals.readers.values import RowError, text
from evals.sample import Sample

ORIGINAL_LAYOUT = ("the MME release folder: <category>/images/*.jpg + <category>/questions_answers_YN/*.txt, "
                   "or <category>/*.png + <category>/*.txt (two lines 'question<TAB>Yes|No' per image)")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG")
LMMS_REPLACE = " Please answer yes or no."


def _yes_no_answer(value) -> str:
    answer = text(value)
    if answer is None:
        raise RowError("missing answer")
    if answer.strip().lower().rstrip(".") not in ("yes", "no"):
        raise RowError(f"answer {answer!r} is not Yes/No")
    return answer.strip()


class MME(Benchmark):
    name = "mme"
    version = "mme/1"
    unit_name = "image"  # the yes/no pair asked about one image (``group``), scored together by acc+
    default_split = "test"
    primary_metric = "perception"
    tsv_patterns = ("MME.tsv",)

    def layouts(self):
        return [self.tsv_layout(("index", "question", "answer", "category"), self._from_tsv, filter_split=False),
                self.hf_layout(("question_id", "question", "answer", "category", "image"), self._from_hf),
                Layout("mme-release", ORIGINAL_LAYOUT, self._is_release, self._read_release)]

    def _sample(self, sample_id, split, question, answer, category, pair, media, err):
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=question, media=media,
                      targets=[answer], category=category, group=pair,
                      meta={"supercategory": "perception" if category in MME_PERCEPTION else
                            "cognition" if category in MME_COGNITION else None},
                      error=err)

    def _from_tsv(self, row, n, images, split):
        answer = _yes_no_answer(row.get("answer"))
        image = text(row.get("image")) or ""
        pair = text(row.get("image_path")) or (image if 0 < len(image) <= 64 else text(row["index"]))
        media, err = load_media(lambda: images.media(row))
        return self._sample(text(row["index"]), split, text(row.get("question")) or "", answer,
                            text(row.get("category")), pair, media, err)

    def row_id(self, row, number):
        qid = text(row.get("question_id"))
        return f"{qid}#{number}" if qid else super().row_id(row, number)

    def _from_hf(self, row, n, root: Path, split):
        answer = _yes_no_answer(row.get("answer"))
        qid = text(row["question_id"])
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        # An image has exactly one Yes and one No question, so (image, answer) is a stable unique id.
        return self._sample(f"{qid}:{answer.lower().rstrip('.')}", split, text(row.get("question")) or "", answer,
                            text(row.get("category")), qid, media, err)

    # --- original release ------------------------------------------------------------------------

    @staticmethod
    def _category_dirs(path: Path) -> list[Path]:
        if not path.is_dir():
            return []
        known = set(MME_PERCEPTION) | set(MME_COGNITION)
        return sorted(p for p in path.iterdir() if p.is_dir() and p.name in known)

    def _is_release(self, path: Path) -> bool:
        return bool(self._category_dirs(path))

    def _read_release(self, path: Path, split: str):
        def rows():
            for cat_dir in self._category_dirs(path):
                qa_dir = cat_dir / "questions_answers_YN"
                image_dir = cat_dir / "images"
                if not qa_dir.is_dir():
                    qa_dir, image_dir = cat_dir, cat_dir
                for txt in sorted(qa_dir.glob("*.txt")):
                    image = next((image_dir / (txt.stem + s) for s in _IMAGE_SUFFIXES
                                  if (image_dir / (txt.stem + s)).is_file()), None)
                    try:
                        lines = [ln for ln in txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
                    except (OSError, UnicodeDecodeError) as exc:
                        lines, image = [], None
                        yield 0, {"question_id": f"{cat_dir.name}/{txt.stem}", "_error": f"cannot read {txt}: {exc}"}
                    for k, line in enumerate(lines):
                        yield k, {"category": cat_dir.name, "line": line, "k": k, "image": image,
                                  "question_id": f"{cat_dir.name}/{image.name if image else txt.stem}"}

        def convert(row, k):
            if "_error" in row:
                raise RowError(row["_error"])
            parts = row["line"].split("\t")
            if len(parts) < 2:
                raise RowError(f"line {k + 1} of {row['question_id']} is not 'question<TAB>answer'")
            answer = _yes_no_answer(parts[1])
            media, err = load_media(lambda: [image_from_path(row["image"]) if row["image"] else
                                             _missing(row["question_id"])])
            return self._sample(f"{row['question_id']}:{answer.lower().rstrip('.')}", split, parts[0], answer,
                                row["category"], row["question_id"], media, err)

        return self.convert_rows(rows(), convert, split)

    # --- prompt / score / aggregate --------------------------------------------------------------

    def prompt(self, sample, flavor):
        if flavor == VLMEVALKIT:
            return sample.question
        return sample.question.strip().replace(LMMS_REPLACE, "") + SHORT_ANSWER_SUFFIX

    def score(self, record, prediction, flavor=OFFICIAL):
        check_flavor(flavor)
        rec = self.record(record)
        got = yes_no(prediction, flavor)
        gold = rec["targets"][0].lower().strip().replace(".", "") if rec["targets"] else None
        return got, float(got is not None and got == gold)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        scored = [{"question_id": r.get("group") or r["sample_id"], "category": r.get("category"),
                   "answer": r["targets"][0] if r["targets"] else "",
                   "prediction": "" if has_error(r) else (r.get("prediction") or "")} for r in rows]
        answers = mme_answers(scored, flavor)
        result = mme_from_answers(answers)
        # Every value is a function of sums over images (the resampling unit: question_id is the row's group or
        # sample id, as resampling_unit): per category, image accuracy, all-right, and 1 (images) — the bootstrap
        # resamples those sums instead of the predictions.
        cats = sorted(result["per_category"])
        units: dict[str, int] = {}
        for cat in cats:
            for qid in answers[cat]:
                units.setdefault(qid, len(units))
        stats_UCK = np.zeros((len(units), len(cats), 3))
        for c, cat in enumerate(cats):
            for qid, right in answers[cat].items():
                stats_UCK[units[qid], c] += (sum(right) / len(right), float(all(right)), 1.0)
        stats_UK = stats_UCK.reshape(len(units), -1)

        def part(c: int, k: int):
            return lambda sums_BK: 100.0 * sums_BK[:, 3 * c + k] / sums_BK[:, 3 * c + 2]

        def total(names):
            members = [c for c, cat in enumerate(cats) if cat in names]
            return lambda sums_BK: sum((part(c, 0)(sums_BK) + part(c, 1)(sums_BK) for c in members),
                                       np.zeros(len(sums_BK)))

        def row(metric, category, value, n, combine):
            return traced_sums(metric_row(self.name, flavor, metric, category, value, n), list(units), stats_UK,
                               combine)

        out = [row("perception", None, result["perception"],
                   sum(1 for r in rows if r.get("category") in MME_PERCEPTION), total(MME_PERCEPTION)),
               row("cognition", None, result["cognition"],
                   sum(1 for r in rows if r.get("category") in MME_COGNITION), total(MME_COGNITION))]
        for c, cat in enumerate(cats):
            detail = result["detail"][cat]
            n = sum(1 for r in rows if r.get("category") == cat)
            out.append(row("score", cat, result["per_category"][cat], n,
                           lambda sums_BK, c=c: part(c, 0)(sums_BK) + part(c, 1)(sums_BK)))
            out.append(row("acc", cat, detail["acc"], n, part(c, 0)))
            out.append(row("acc_plus", cat, detail["acc_plus"], n, part(c, 1)))
        return out + count_rows(self.name, flavor, rows)


def _missing(question_id):
    raise MediaError(f"image file not found for {question_id}")


BENCHMARK = MME()
