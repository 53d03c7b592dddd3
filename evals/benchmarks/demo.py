"""``demo`` — a tiny synthetic image + video benchmark shipped in ``evals/data/demo/``.

Ten questions whose answers are fixed by the drawn content (colour of a square, number of squares,
direction of a moving dot, colour change in a video, which of two images holds a circle), generated
by ``evals/data/make_demo.py``. It needs no data path (``load(None)``) and exercises every media path:
single image, two images, video. ``samples.jsonl`` rows: ``id``, ``type`` (``mcq`` | ``yesno`` |
``short``), ``question``, ``options``, ``answers``, ``media`` (``[{kind, file}]``), ``category``.

Prompts follow the lmms-eval / VLMEvalKit patterns (letter post-prompt, short-answer post-prompt).
Scoring per type: :func:`evals.extract.choice`, :func:`evals.metrics.yes_no`, or VQA-normalised exact
match (:func:`evals.normalize.normalize_answer`).
"""

from __future__ import annotations

from pathlib import Path

from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.benchmarks.prompts import LMMS_MCQ_SUFFIX, SHORT_ANSWER_SUFFIX, lmms_option_lines, vlmevalkit_mcq_text
from evals.errors import DatasetError
from evals.extract.choice import choice
from evals.extract.yesno import yes_no
from evals.flavors import OFFICIAL, VLMEVALKIT, check_flavor
from evals.media import MediaError, image_from_path, video_from_path
from evals.normalize import normalize_answer
from evals.readers.files import iter_jsonl
from evals.readers.values import RowError, text
from evals.sample import Sample

DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"
LAYOUT = "a demo folder: samples.jsonl + the image/video files it names (default: evals/data/demo)"
TYPES = ("mcq", "yesno", "short")


class Demo(Benchmark):
    name = "demo"
    version = "demo/1"
    default_split = "test"
    video_sampling = {"num_frames": 4}

    def layouts(self):
        return [Layout("demo", LAYOUT, lambda p: (p / "samples.jsonl").is_file() if p.is_dir() else p.suffix == ".jsonl",
                       self._read)]

    def load(self, data_path=None, limit=None, *, split=None):
        """Like :meth:`Benchmark.load`, but ``data_path=None`` means the packaged demo data."""
        if data_path is None:
            data_path = DEMO_DIR
            if not (DEMO_DIR / "samples.jsonl").is_file():
                raise DatasetError(DEMO_DIR, "packaged demo data is missing (run python -m evals.data.make_demo)", LAYOUT)
        return super().load(data_path, limit, split=split)

    def _read(self, path: Path, split: str):
        file = path / "samples.jsonl" if path.is_dir() else path

        def medium(base: Path, item: dict):
            if not isinstance(item, dict) or item.get("kind") not in ("image", "video"):
                raise MediaError(f"bad media entry {item!r}")
            target = base / str(item.get("file") or "")
            return image_from_path(target) if item["kind"] == "image" else video_from_path(target)

        def convert(row, number):
            if row["error"]:
                raise RowError(row["error"])
            rec = row["record"]
            kind = text(rec.get("type"))
            if kind not in TYPES:
                raise RowError(f"type {kind!r} is not one of {TYPES}")
            answers = [str(a) for a in rec.get("answers") or []]
            if not answers:
                raise RowError("missing answers")
            options = {str(k): str(v) for k, v in (rec.get("options") or {}).items()}
            if kind == "mcq" and answers[0] not in options:
                raise RowError(f"answer {answers[0]!r} is not one of the options {sorted(options)}")
            media, err = load_media(lambda: [medium(file.parent, m) for m in rec.get("media") or []])
            return Sample(sample_id=text(rec.get("id")) or f"line{number}", benchmark=self.name, split=split,
                          question=text(rec.get("question")) or "", options=options, media=media, targets=answers,
                          category=text(rec.get("category")), meta={"type": kind}, error=err)

        rows = ((number, {"record": record, "error": error}) for number, record, error in iter_jsonl(file))
        return self.convert_rows(rows, convert, split)

    def row_id(self, row, number):
        return text((row.get("record") or {}).get("id")) or f"line{number}"

    def prompt(self, sample, flavor):
        if sample.meta.get("type") == "mcq":
            if flavor == VLMEVALKIT:
                return vlmevalkit_mcq_text(sample.question, sample.options)
            return f"{sample.question}\n{lmms_option_lines(sample.options)}{LMMS_MCQ_SUFFIX}"
        return sample.question + SHORT_ANSWER_SUFFIX

    def score(self, record, prediction, flavor=OFFICIAL):
        check_flavor(flavor)
        rec = self.record(record)
        prediction = "" if prediction is None else str(prediction)
        kind = rec["meta"].get("type")
        if kind == "mcq":
            got = choice(prediction, rec["options"], flavor)
            return got, float(got is not None and got in rec["targets"])
        if kind == "yesno":
            got = yes_no(prediction, flavor)
            return got, float(got is not None and got in [t.lower() for t in rec["targets"]])
        got = normalize_answer(prediction, flavor)
        return got or None, float(got != "" and got in {normalize_answer(t, flavor) for t in rec["targets"]})


BENCHMARK = Demo()
