"""VLMEvalKit benchmark TSV files (``$LMUData/<Dataset>.tsv``), as ``ImageBaseDataset`` reads them.

Columns: ``index``, ``question``, ``answer``, option columns ``A``..``Z``, ``image`` (base64 PNG/JPEG, or
a Python list literal of base64 strings for multi-image questions), optional ``image_path``,
``category``, ``l2-category``, ``split``, ``hint``.

* An ``image`` value of at most 64 characters is the ``index`` of another row whose image it reuses
  (``vlmeval/dataset/image_base.py``; MMBench's rotated copies use this).
* Without an ``image`` column the TSV is "meta only": ``image_path`` names files, looked up as given,
  next to the TSV, and under ``images/<tsv stem>/``.

NOTE: VLMEvalKit reads with pandas' default NA handling, which turns cells such as ``None``, ``NA`` or
``null`` into NaN — an MMBench option reading "None" silently disappears there. We treat only empty
cells as missing.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import pandas as pd

from evals.errors import DatasetError
from evals.media import MediaError, image_from_base64, image_from_path
from evals.readers.values import is_missing, parse_list, text
from evals.sample import Media

TSV_LAYOUT = "a VLMEvalKit TSV file (tab-separated; columns index, question, answer, image[, A..Z, category, split])"
_INDEX_REFERENCE_MAX = 64


def read_table(path: Path, required: tuple[str, ...], expected: str = TSV_LAYOUT) -> pd.DataFrame:
    """Read a TSV as strings; a file that cannot be parsed or lacks a required column is a DatasetError."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""],
                            quoting=csv.QUOTE_MINIMAL, engine="c")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DatasetError(path, f"cannot parse TSV: {exc}", expected) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(path, f"TSV lacks required column(s) {missing}; has {list(frame.columns)[:20]}", expected)
    return frame


class TsvImages:
    """Resolves the ``image`` / ``image_path`` cells of one TSV into Media, caching decoded images."""

    def __init__(self, frame: pd.DataFrame, tsv_path: Path):
        self.tsv_path = tsv_path
        self.has_image = "image" in frame.columns
        self.raw: dict[str, str] = {}
        if self.has_image:
            index = frame["index"] if "index" in frame.columns else pd.Series(range(len(frame)))
            self.raw = {str(i): ("" if is_missing(v) else str(v)) for i, v in zip(index, frame["image"])}
        self._cache: dict[str, list[Media]] = {}

    def _resolve(self, key: str, value: str) -> tuple[str, str]:
        """Follow an index reference (≤ 64 characters) to the row that holds the base64 image."""
        if 0 < len(value) <= _INDEX_REFERENCE_MAX:
            target = self.raw.get(value.strip())
            if target is None or len(target) <= _INDEX_REFERENCE_MAX:
                raise MediaError(f"image refers to index {value.strip()!r}, which holds no image")
            return value.strip(), target
        return key, value

    def media(self, row: dict) -> list[Media]:
        """The row's images in order; raise :class:`MediaError` for an absent or undecodable image."""
        if self.has_image and not is_missing(row.get("image")):
            key, value = self._resolve(str(row.get("index")), str(row["image"]))
            if key not in self._cache:
                items = parse_list(value) if value.lstrip().startswith("[") else [value]
                self._cache[key] = [image_from_base64(str(b), f"image {i + 1}") for i, b in enumerate(items)]
            return self._cache[key]
        paths = [p for p in parse_list(row.get("image_path")) if not is_missing(p)]
        if not paths:
            raise MediaError("row has no image (empty image and image_path)")
        return [image_from_path(self._find(str(p)), "image") for p in paths]

    def _find(self, name: str) -> Path:
        candidates = [Path(name), self.tsv_path.parent / name, self.tsv_path.parent / "images" / self.tsv_path.stem / name]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        return candidates[-1]


def iter_rows(frame: pd.DataFrame, split: str | None) -> Iterator[tuple[int, dict]]:
    """``(row_number, row)`` of the TSV, keeping only ``split`` when the file has a split column."""
    has_split = "split" in frame.columns
    columns = list(frame.columns)
    for number, values in enumerate(frame.itertuples(index=False, name=None)):
        row = dict(zip(columns, values))
        if split is not None and has_split and text(row.get("split")) not in (None, split):
            continue
        yield number, row
