"""Grounding (referring-expression comprehension): a predicted box against the ground truth, per flavor.

The ground truth is the COCO box ``[x, y, w, h]`` in the image's pixels (as stored, see
:mod:`evals.image_size`), converted to corners ``[x, y, x + w, y + h]``. A prediction counts as correct when
IoU ≥ 0.5 (``Acc@0.5``, the number every RefCOCO table reports).

=============  ===========================================================================================
flavor         how the answer's numbers become a box and how IoU is computed
=============  ===========================================================================================
official       ERNIE-4.5-VL's convention (there is no RefCOCO scorer for generative models from the
               dataset's authors): coordinates are integers 0–1000 relative to the image's width and height
               — the range of ERNIE's location tokens ``<|LOC_0|>``…``<|LOC_1000|>`` (ERNIEKit
               ``Ernie4_5_VLTokenizer``, ``coor_num = 1001``). Being relative, they do not depend on the size
               the processor resizes the image to: ``x_px = x / 1000 · width`` of the original image. Four
               values all within [0, 1] with a fractional part are read as 0–1 fractions instead. Corners are
               ordered (min, max) and clipped to the image; IoU is zero for disjoint boxes.
lmms-eval      ``tasks/refcoco/utils_rec.py``: the prompt asks for 0–1 floats; the ground truth is divided by
               the image size; ``compute_iou`` as written (no clipping, no reordering; an unparsed answer is
               ``[0, 0, 0, 0]``); where the reference divides by a zero union (ZeroDivisionError) ours gives 0.
vlmevalkit     ``vlmeval/dataset/refcoco.py``: ``_to_absolute`` guesses the unit from the largest magnitude
               (≤ 1.5: fractions; ≤ 1000: thousandths; else pixels), clips and reorders;
               ``_compute_iou`` (zero for disjoint or empty boxes).
=============  ===========================================================================================
"""

from __future__ import annotations

from typing import Sequence

from evals.extract.boxes import parse_box, parse_box_lmms_eval, parse_box_vlmevalkit
from evals.flavors import LMMS_EVAL, OFFICIAL, check_flavor

IOU_THRESHOLD = 0.5
NORMALIZED_RANGE = 1000.0


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    """COCO ``[x, y, w, h]`` → corners ``[x1, y1, x2, y2]``."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def to_normalized(box_xyxy: Sequence[float], size: tuple[int, int], scale: float = NORMALIZED_RANGE) -> list[float]:
    """Pixel corners → coordinates relative to the image, on ``0..scale``."""
    width, height = size
    x1, y1, x2, y2 = box_xyxy
    return [x1 / width * scale, y1 / height * scale, x2 / width * scale, y2 / height * scale]


def _clip_order(box: list[float], size: tuple[int, int]) -> list[float]:
    width, height = size
    x1, x2 = sorted(min(max(v, 0.0), width) for v in (box[0], box[2]))
    y1, y2 = sorted(min(max(v, 0.0), height) for v in (box[1], box[3]))
    return [x1, y1, x2, y2]


def official_pixels(box: Sequence[float], size: tuple[int, int]) -> list[float]:
    """Our conversion of a parsed answer (0–1000, or 0–1 fractions) to clipped, ordered pixel corners."""
    box = [float(v) for v in box]
    width, height = size
    fractions = all(0.0 <= v <= 1.0 for v in box) and any(v != int(v) for v in box)
    scale = 1.0 if fractions else NORMALIZED_RANGE
    return _clip_order([box[0] / scale * width, box[1] / scale * height, box[2] / scale * width,
                        box[3] / scale * height], size)


def vlmevalkit_pixels(box: Sequence[float], size: tuple[int, int]) -> list[float]:
    """VLMEvalKit ``RefCOCODataset._to_absolute``."""
    box = [float(v) for v in box][:4]
    width, height = size
    largest = max(abs(v) for v in box)
    if largest <= 1.5:
        box = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
    elif largest <= 1000:
        box = [box[0] / 1000.0 * width, box[1] / 1000.0 * height, box[2] / 1000.0 * width, box[3] / 1000.0 * height]
    return _clip_order(box, size)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two corner boxes; 0 for disjoint boxes or an empty union (``official``, VLMEvalKit)."""
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    if right <= left or bottom <= top:
        return 0.0
    inter = (right - left) * (bottom - top)
    union = max(a[2] - a[0], 0) * max(a[3] - a[1], 0) + max(b[2] - b[0], 0) * max(b[3] - b[1], 0) - inter
    return inter / union if union > 0 else 0.0


def iou_lmms_eval(gt: Sequence[float], pred: Sequence[float]) -> float:
    """lmms-eval ``compute_iou`` as written: raw (possibly negative) areas; 0 where it would divide by zero."""
    inter = max(0.0, min(gt[2], pred[2]) - max(gt[0], pred[0])) * max(0.0, min(gt[3], pred[3]) - max(gt[1], pred[1]))
    union = (gt[2] - gt[0]) * (gt[3] - gt[1]) + (pred[2] - pred[0]) * (pred[3] - pred[1]) - inter
    return inter / union if union != 0 else 0.0


def center_hit(gt: Sequence[float], pred: Sequence[float]) -> bool:
    """lmms-eval ``compute_center_accuracy``: the predicted box's centre lies inside the ground truth."""
    cx, cy = (pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2
    return gt[0] <= cx <= gt[2] and gt[1] <= cy <= gt[3]


def grounding(prediction: str, gt_xyxy: Sequence[float], size: tuple[int, int],
              flavor: str = OFFICIAL) -> tuple[list[float] | None, float]:
    """``(box, IoU)`` of one answer against the ground-truth pixel corners of an image of ``size`` (w, h).

    ``box`` is the parsed box in the space the flavor compares in (pixels; 0–1 fractions for lmms-eval), or
    None when the answer holds no box (IoU 0).
    """
    check_flavor(flavor)
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    if flavor == LMMS_EVAL:
        box = parse_box_lmms_eval(prediction)
        gt = to_normalized(gt_xyxy, size, 1.0)
        return box, iou_lmms_eval(gt, box if box is not None else [0.0, 0.0, 0.0, 0.0])
    if flavor == OFFICIAL:
        parsed = parse_box(prediction)
        box = official_pixels(parsed, size) if parsed is not None else None
    else:
        parsed = parse_box_vlmevalkit(prediction)
        box = vlmevalkit_pixels(parsed, size) if parsed is not None else None
    return box, (iou(box, gt_xyxy) if box is not None else 0.0)
