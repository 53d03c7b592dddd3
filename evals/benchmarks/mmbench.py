"""MMBench (dev, English) with CircularEval — benchmarks.md §1.1, §2.4.

Formats read:

* VLMEvalKit TSV ``MMBench_DEV_EN(_V11).tsv``: ``index``, ``question``, ``hint``, ``A``-``D``, ``answer``,
  ``category``, ``l2-category``, ``split``, ``image`` (base64 or the index of the row whose image a
  rotated copy reuses). The file holds every rotated copy (``index = k·1e6 + base``).
* Hugging Face ``lmms-lab/MMBench`` config ``en`` (``en/dev-*.parquet``): the same columns with
  ``L2-category`` and an image struct.

Prompt: lmms-eval ``tasks/mmbench/en_utils.py mmbench_doc_to_text``
(``"{hint} {question} There are several options:\\nA. …"`` + ``"\\n"`` + the YAML post-prompt);
VLMEvalKit ``ImageMCQDataset.build_prompt``.

Scoring: per row the vanilla correctness of the extracted letter (official/vlmevalkit ``can_infer``;
lmms-eval the legacy ``can_infer`` then ``extract_mcq_answer``, on the stripped prediction). The
headline ``accuracy`` is CircularEval (:func:`evals.metrics.circular`) over groups that contain their
base question; ``accuracy_vanilla`` is the plain accuracy of the base questions.
"""

from __future__ import annotations

from pathlib import Path

from evals.aggregate import count_rows, decode_rows, group_by, has_error, mean_rows, metric_row
from evals.benchmarks.base import Benchmark, load_media
from evals.benchmarks.prompts import LMMS_MCQ_SUFFIX, vlmevalkit_mcq_text
from evals.extract.choice import can_infer, extract_mcq_answer, mmbench_legacy_can_infer
from evals.flavors import LMMS_EVAL, OFFICIAL, check_flavor
from evals.media import image_from_struct
from evals.metrics.circular import circular
from evals.readers.tsv import TsvImages
from evals.readers.values import RowError, check_answer_letter, option_columns, text
from evals.sample import Sample

CIRCULAR_OFFSET = 1_000_000


def extract_letter(prediction: str, options: dict[str, str], flavor: str) -> str | None:
    """The letter one MMBench row is read as, with the flavor's per-row rule."""
    prediction = "" if prediction is None else str(prediction)
    if flavor == LMMS_EVAL:
        prediction = prediction.strip()
        letter = mmbench_legacy_can_infer(prediction, options) or extract_mcq_answer(prediction, sorted(options))
    else:
        letter = can_infer(prediction, options)
    return letter if letter in options else None


def _hint(value) -> str | None:
    """The hint, or None; lmms-lab/MMBench writes absent hints as the string "nan"."""
    hint = text(value)
    return None if hint is None or hint.strip() in ("nan", "NaN") else hint


class MMBench(Benchmark):
    name = "mmbench"
    version = "mmbench-dev-en/1"
    unit_name = "circular group"  # a question and its rotated copies (``group``)
    default_split = "dev"
    tsv_patterns = ("MMBench_DEV_EN_V11.tsv", "MMBench_DEV_EN.tsv", "MMBench*.tsv")

    def layouts(self):
        required = ("index", "question", "answer", "A", "B")
        return [self.tsv_layout(required + ("image",), self._from_tsv),
                self.hf_layout(required + ("image",), self._from_hf, configs=("en",))]

    def _sample(self, row: dict, split: str, media, media_error) -> Sample:
        index = int(float(text(row["index"])))
        options = option_columns(row, "ABCDEFGHI")
        if len(options) < 2:
            raise RowError(f"needs at least two option columns, found {sorted(options)}")
        answer = text(row.get("answer"))
        if answer is None:
            raise RowError("missing answer")
        return Sample(
            sample_id=str(index), benchmark=self.name, split=text(row.get("split")) or split,
            question=text(row.get("question")) or "", options=options, media=media,
            targets=[check_answer_letter(answer, options)],
            category=text(row.get("category")), subcategory=text(row.get("l2-category") or row.get("L2-category")),
            group=str(index % CIRCULAR_OFFSET),
            meta={"index": index, "hint": _hint(row.get("hint")), "source": text(row.get("source"))},
            error=media_error)

    def _from_tsv(self, row: dict, n: int, images: TsvImages, split: str) -> Sample:
        media, err = load_media(lambda: images.media(row))
        return self._sample(row, split, media, err)

    def _from_hf(self, row: dict, n: int, root: Path, split: str) -> Sample:
        media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
        return self._sample(row, split, media, err)

    def prompt(self, sample: Sample, flavor: str) -> str:
        hint = sample.meta.get("hint")
        if flavor == "vlmevalkit":
            return vlmevalkit_mcq_text(sample.question, sample.options, hint)
        options = "There are several options:\n" + "\n".join(f"{k}. {v}" for k, v in sample.options.items())
        query = f"{hint} {sample.question} {options}" if hint else f"{sample.question} {options}"
        return f"{query}\n{LMMS_MCQ_SUFFIX}"

    def score(self, record, prediction, flavor=OFFICIAL):
        check_flavor(flavor)
        rec = self.record(record)
        letter = extract_letter(prediction, rec["options"], flavor)
        return letter, float(letter is not None and letter in rec["targets"])

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        hits = []
        for group, members in group_by(rows, lambda r: r.get("group")).items():
            base = [r for r in members if str(r["meta"].get("index")) == str(group)]
            if not base:
                continue  # the base question was not run (partial run): the group cannot be judged
            circ_rows = []
            for r in members:
                circ = {"index": r["meta"].get("index", 0), "GT": r["targets"][0] if r["targets"] else "",
                        "prediction": "" if has_error(r) else (r.get("prediction") or "")}
                circ.update(r["options"])
                circ_rows.append(circ)
            failed = any(has_error(r) for r in members)
            hits.append({"group": group, "category": base[0].get("category"),  # group: the bootstrap's unit
                         "subcategory": base[0].get("subcategory"),
                         "score": 0.0 if failed else float(circular(circ_rows, flavor)), "error": None})
        out = mean_rows(self.name, flavor, "accuracy", hits, by={"subcategory": lambda r: r.get("subcategory")})
        base_rows = [r for r in rows if int(r["meta"].get("index", 0)) < CIRCULAR_OFFSET]
        if base_rows:
            out += mean_rows(self.name, flavor, "accuracy_vanilla", base_rows)[:1]
        out.append(metric_row(self.name, flavor, "circular_groups", None, len(hits), len(rows)))
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = MMBench()
