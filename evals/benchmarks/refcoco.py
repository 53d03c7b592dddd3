"""RefCOCO / RefCOCO+ / RefCOCOg referring-expression grounding (REC) — one box per expression, Acc@0.5.

Formats read:

* Hugging Face ``lmms-lab/RefCOCO`` (splits ``val``, ``test``, ``testA``, ``testB``), ``lmms-lab/RefCOCOplus``
  (``val``, ``testA``, ``testB``), ``lmms-lab/RefCOCOg`` (``val``, ``test``): ``data/<split>-*.parquet`` with
  ``question_id``, ``image``, ``question``, ``answer`` (the list of referring expressions of one object),
  ``segmentation``, ``bbox`` (COCO ``[x, y, w, h]`` in the image's pixels), ``iscrowd``, ``file_name``. As in
  lmms-eval (``refcoco_bbox_rec_preprocess_dataset``) every expression is one sample. A folder holding several of
  these repositories is read at once; the variant comes from the folder name and is the sample's ``category``.
* VLMEvalKit TSV ``RefCOCO.tsv`` (``vlmeval/dataset/refcoco.py``): ``index``, ``image``, ``question``, ``split``
  (``RefCOCO_val`` … ``RefCOCOg_test``) or ``category`` (``"RefCOCO val"``), the box as ``bbox_x1``…``bbox_y2``
  (pixels) or in ``answer`` (fractions if every value ≤ 1.5, else pixels — decided per row here, per file in
  VLMEvalKit), optional ``width``/``height``. Rows of the requested split of every variant are read (``--split
  all``: every row).

Coordinates. The ground truth is kept in the *original image's pixels* (``meta.bbox_xyxy``, corners) with the
image's stored size (``meta.image_size``, read from the file header). ERNIE-4.5-VL writes positions on a 0–1000
grid relative to the image (its tokenizer reserves ``<|LOC_0|>``…``<|LOC_1000|>``), so an answer does not depend on
the size the processor resizes the image to: ``x_px = x / 1000 · width``. ``targets`` holds the ground truth in
that convention (``"[x1, y1, x2, y2]"``, integers 0–1000), which is also what a correct answer looks like.

Prompt per flavor: ``official`` asks for the box on ERNIE's 0–1000 grid; ``lmms-eval`` is
``refcoco_bbox_rec_doc_to_text`` (floats between 0 and 1); ``vlmevalkit`` is the TSV's question as stored (for
rows read from the HF files, the ``official`` prompt, whose 0–1000 answers VLMEvalKit's scorer reads as
thousandths). Parsing and IoU per flavor: :mod:`evals.metrics.grounding`.

Aggregation: ``accuracy`` (Acc@0.5, ×100) overall and per variant, ``mean_iou`` (0–1); lmms-eval also reports
``accuracy@0.1`` … ``accuracy@0.9`` and ``center_accuracy`` (the predicted box's centre inside the ground truth).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from evals.aggregate import count_rows, decode_rows, has_error, mean_row, mean_rows
from evals.benchmarks.base import Benchmark, Layout, load_media
from evals.extract.boxes import parse_box_vlmevalkit
from evals.flavors import LMMS_EVAL, OFFICIAL, VLMEVALKIT, check_flavor
from evals.image_size import media_size
from evals.media import MediaError, image_from_struct
from evals.metrics.grounding import IOU_THRESHOLD, center_hit, grounding, to_normalized, xywh_to_xyxy
from evals.readers.hf_parquet import HF_LAYOUT, find_shards, iter_parquet, list_shards, require_columns
from evals.readers.values import RowError, parse_list, text
from evals.sample import Sample

OFFICIAL_PROMPT = ("Locate the region this sentence describes: {expression}\n"
                   "Answer with its bounding box as [x1, y1, x2, y2] (top-left and bottom-right corners), each value an "
                   "integer from 0 to 1000 relative to the image width (x) and height (y).")
LMMS_PROMPT = ("Bounding box coordinates are specified in the format (top-left x, top-left y, bottom-right x, "
               "bottom-right y). All values are floating point numbers bounded between 0 and 1. Please provide the "
               "bounding box coordinate of the region this sentence describes: ")
LMMS_THRESHOLDS = (0.1, 0.3, 0.7, 0.9)
HF_FORMAT = f"{HF_LAYOUT} (lmms-lab/RefCOCO, RefCOCOplus, RefCOCOg: question_id, image, answer, bbox)"
_VARIANTS = (("refcocog", "RefCOCOg"), ("refcocoplus", "RefCOCO+"), ("refcoco+", "RefCOCO+"), ("refcoco", "RefCOCO"))
_TSV_BOX_COLUMNS = (("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"), ("x1", "y1", "x2", "y2"))


def variant_of(parts) -> str:
    """The dataset variant named by the innermost path part that names one (default RefCOCO)."""
    for part in reversed([str(p).lower() for p in parts]):
        for key, name in _VARIANTS:
            if key in part:
                return name
    return "RefCOCO"


def _tsv_split_label(row) -> str:
    label = text(row.get("split"))
    if label:
        return label
    category = (text(row.get("category")) or "RefCOCO").split(None, 1)
    suffix = re.sub(r"[\s_-]+", "", category[1]) if len(category) > 1 else ""
    suffix = {"val": "val", "test": "test", "testa": "testA", "testb": "testB"}.get(suffix.lower(), suffix)
    return f"{category[0]}_{suffix}" if suffix else category[0]


def _in_split(row, split: str) -> bool:
    return split == "all" or _tsv_split_label(row).partition("_")[2] == split


def _number(value) -> float | None:
    try:
        number = float(text(value))
    except (TypeError, ValueError):
        return None
    return number if number == number else None


class RefCOCO(Benchmark):
    name = "refcoco"
    version = "refcoco-rec/1"
    default_split = "val"
    primary_metric = "accuracy"
    tsv_patterns = ("RefCOCO.tsv", "RefCOCO*.tsv")

    def layouts(self):
        return [self.tsv_layout(("index", "question"), self._from_tsv, filter_split=False, keep=_in_split),
                Layout("hf-parquet", HF_FORMAT, lambda p: bool(list_shards(p)), self._read_hf)]

    def _sample(self, sample_id, split, expression, variant, media, err, box_xyxy, size, meta):
        if err is None:
            try:
                size = size or media_size(media[0])
            except MediaError as exc:
                err = str(exc)
        grid = None
        if size:
            grid = "[" + ", ".join(str(round(v)) for v in to_normalized(box_xyxy, size)) + "]"
        meta = dict(meta, bbox_xyxy=[round(v, 3) for v in box_xyxy], image_size=list(size) if size else None)
        return Sample(sample_id=sample_id, benchmark=self.name, split=split, question=expression, media=media,
                      targets=[grid] if grid else [], category=variant, meta=meta, error=err)

    # --- Hugging Face ------------------------------------------------------------------------------

    def _read_hf(self, path: Path, split: str):
        shards = find_shards(path, split, (), HF_FORMAT)
        require_columns(shards, ("question_id", "image", "answer", "bbox"), HF_FORMAT)
        root = path if path.is_dir() else path.parent

        def rows():  # one row per referring expression, as lmms-eval explodes them
            for number, (shard, row) in enumerate(iter_parquet(shards)):
                parts = [root.name, *shard.relative_to(root).parts[:-1]] if path.is_dir() else [shard.stem]
                expressions = [e for e in (text(a) for a in parse_list(row.get("answer"))) if e] or [None]
                for k, expression in enumerate(expressions):
                    yield number, dict(row, _variant=variant_of(parts), _k=k, _expression=expression)

        def convert(row, number):
            if row["_expression"] is None:
                raise RowError("no referring expression (empty answer list)")
            box = [float(v) for v in parse_list(row.get("bbox"))]
            if len(box) != 4:
                raise RowError(f"bbox {row.get('bbox')!r} is not [x, y, w, h]")
            media, err = load_media(lambda: [image_from_struct(row.get("image"), root)])
            meta = {"question_id": text(row.get("question_id")), "file_name": text(row.get("file_name"))}
            return self._sample(self.row_id(row, number), split, row["_expression"], row["_variant"], media, err,
                                xywh_to_xyxy(box), None, meta)

        return self.convert_rows(rows(), convert, split)

    def row_id(self, row, number):
        if "_variant" in row:
            return f"{row['_variant']}/{text(row.get('question_id')) or number}/{row['_k']}"
        return text(row.get("index")) or str(number)

    # --- VLMEvalKit TSV ----------------------------------------------------------------------------

    def _from_tsv(self, row, n, images, split):
        variant = _tsv_split_label(row).partition("_")[0] or "RefCOCO"
        media, err = load_media(lambda: images.media(row))
        width, height = _number(row.get("width")), _number(row.get("height"))
        size = (int(width), int(height)) if width and height and width > 0 and height > 0 else None
        box = None
        for columns in _TSV_BOX_COLUMNS:
            values = [_number(row.get(c)) for c in columns]
            if all(v is not None for v in values):
                box = values
                break
        if box is None:
            parsed = parse_box_vlmevalkit(text(row.get("answer")) or "")
            if parsed is None:
                raise RowError("no ground-truth box (bbox_x1..bbox_y2 columns or a box in answer)")
            if max(abs(v) for v in parsed) <= 1.5:  # fractions of the image size
                if size is None and err is None:
                    size = media_size(media[0])
                if size is None:
                    raise RowError("box given as fractions but the image size is unknown")
                parsed = [parsed[0] * size[0], parsed[1] * size[1], parsed[2] * size[0], parsed[3] * size[1]]
            box = parsed
        return self._sample(text(row["index"]), split, text(row.get("question")) or "", variant, media, err, box,
                            size, {"prompt_stored": True, "tsv_split": _tsv_split_label(row)})

    # --- prompting and scoring ---------------------------------------------------------------------

    def prompt(self, sample, flavor):
        if flavor == LMMS_EVAL:
            return LMMS_PROMPT + sample.question
        if flavor == VLMEVALKIT and sample.meta.get("prompt_stored"):
            return sample.question
        return OFFICIAL_PROMPT.format(expression=sample.question)

    @staticmethod
    def _measure(rec, prediction, flavor):
        size = rec["meta"].get("image_size")
        gt = rec["meta"].get("bbox_xyxy")
        if not size or not gt:
            raise ValueError(f"sample {rec.get('sample_id')!r} has no image_size / bbox_xyxy in meta")
        box, value = grounding("" if prediction is None else str(prediction), gt, tuple(size), flavor)
        return box, value, gt, size

    def score(self, record, prediction, flavor=OFFICIAL):
        check_flavor(flavor)
        box, value, _, _ = self._measure(self.record(record), prediction, flavor)
        extracted = None if box is None else json.dumps([round(v, 4) for v in box])
        return extracted, float(value >= IOU_THRESHOLD)

    def aggregate(self, rows, flavor=OFFICIAL):
        check_flavor(flavor)
        rows = decode_rows(rows)
        measured = []
        for r in rows:
            if has_error(r):
                measured.append(dict(r, _iou=0.0, _center=0.0))
                continue
            box, value, gt, size = self._measure(r, r.get("prediction"), flavor)
            center = 0.0
            if flavor == LMMS_EVAL:
                center = float(center_hit(to_normalized(gt, tuple(size), 1.0), box or [0.0, 0.0, 0.0, 0.0]))
            measured.append(dict(r, _iou=value, _center=center))
        out = mean_rows(self.name, flavor, "accuracy", measured)
        out += mean_rows(self.name, flavor, "mean_iou", measured, score=lambda r: r["_iou"], scale=1.0)
        if flavor == LMMS_EVAL and measured:
            for threshold in LMMS_THRESHOLDS:
                out.append(mean_row(self.name, flavor, f"accuracy@{threshold}", None, measured,
                                    score=lambda r, t=threshold: float(r["_iou"] >= t)))
            out += mean_rows(self.name, flavor, "center_accuracy", measured, score=lambda r: r["_center"])[:1]
        return out + count_rows(self.name, flavor, rows)


BENCHMARK = RefCOCO()
