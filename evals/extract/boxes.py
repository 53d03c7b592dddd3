"""Bounding boxes from free-form model text (grounding benchmarks: RefCOCO).

Every parser returns four floats ``[x1, y1, x2, y2]`` *as written* (no scaling) or None; converting them to
pixels is the metric's job (:mod:`evals.metrics.grounding`), because the unit depends on the convention.

* :func:`parse_box` — ours (``official``), for ERNIE-4.5-VL answers. In order, the first that matches:

  1. location tokens ``<|LOC_n|>`` (ERNIE's coordinate vocabulary, n = 0…1000; kept only if the decoder did not
     drop them as special tokens): the first run of at least four; a run of eight or more is a 4-point polygon
     (PaddleOCR-VL spotting) and gives its enclosing box;
  2. four numbers in brackets or parentheses, separated by commas and/or spaces: ``[x1, y1, x2, y2]``,
     ``(x1,y1,x2,y2)``, JSON ``{"bbox_2d": [ … ]}``;
  3. two points ``(x1, y1), (x2, y2)`` (Qwen-VL / ``<box>`` style);
  4. an answer that holds exactly four numbers (``12 30 400 500``).

* :func:`parse_box_lmms_eval` — lmms-eval ``tasks/refcoco/utils_rec.py parse_float_sequence_within``: the first
  ``[a, b, c, d]`` (optional minus, optional decimals, a comma right after each of the first three numbers);
  the reference returns ``[0, 0, 0, 0]`` when nothing matches, ours None (the metric substitutes the zeros).
* :func:`parse_box_vlmevalkit` — VLMEvalKit ``vlmeval/dataset/refcoco.py RefCOCODataset._parse_prediction``:
  the first bracketed four numbers (commas or spaces, exponents allowed), else the first four numbers anywhere.
"""

from __future__ import annotations

import re

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SEP = r"\s*[,\s]\s*"
_LOC = re.compile(r"<\|LOC_(\d+)\|>")
_LOC_RUN = re.compile(r"(?:<\|LOC_\d+\|>\s*(?:<\|LOC_SEP\|>\s*)?){4,}")
_BRACKETED = re.compile(rf"[\[(]\s*({_NUM}){_SEP}({_NUM}){_SEP}({_NUM}){_SEP}({_NUM})\s*[\])]")
_TWO_POINTS = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*(?:to|-)?\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")
_NUMBER = re.compile(_NUM)

_LMMS_BOX = re.compile(r"\[\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?)\s*\]")
_VLMK_NUM = r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?"
_VLMK_SEP = r"(?:\s*,\s*|\s+)"
_VLMK_BOX = re.compile(rf"\[\s*({_VLMK_NUM}){_VLMK_SEP}({_VLMK_NUM}){_VLMK_SEP}({_VLMK_NUM}){_VLMK_SEP}({_VLMK_NUM})\s*\]")


def _floats(values) -> list[float] | None:
    try:
        out = [float(v) for v in values]
    except ValueError:
        return None
    return out if all(v == v for v in out) else None  # no NaN


def parse_box(text: str) -> list[float] | None:
    """Our parser for the model's answer (see the module docstring); None if no box is found."""
    text = "" if text is None else str(text)
    run = _LOC_RUN.search(text)
    if run:
        values = [float(v) for v in _LOC.findall(run.group(0))]
        if len(values) >= 8:
            xs, ys = values[0:8:2], values[1:8:2]
            return [min(xs), min(ys), max(xs), max(ys)]
        return values[:4]
    for pattern in (_BRACKETED, _TWO_POINTS):
        for match in pattern.finditer(text):
            box = _floats(match.groups())
            if box is not None:
                return box
    numbers = _NUMBER.findall(text)
    return _floats(numbers) if len(numbers) == 4 else None


def parse_box_lmms_eval(text: str) -> list[float] | None:
    """lmms-eval ``parse_float_sequence_within`` (None where it returns ``[0, 0, 0, 0]`` for no match)."""
    match = _LMMS_BOX.search("" if text is None else str(text))
    return [float(match.group(i)) for i in range(1, 5)] if match else None


def parse_box_vlmevalkit(text: str) -> list[float] | None:
    """VLMEvalKit ``RefCOCODataset._parse_prediction``."""
    text = "" if text is None else str(text)
    for match in _VLMK_BOX.finditer(text):
        box = _floats(match.groups())
        if box is not None:
            return box
    numbers = re.findall(_VLMK_NUM, text)
    return _floats(numbers[:4]) if len(numbers) >= 4 else None
