"""The data behind the HTML pages' sample browser: one record per prediction row, written next to the page.

A page (``report.html``, ``compare.html``) loads its rows lazily so that it stays small and quick at 10,000 rows
and more, opened straight from the file system (``file://``: ``fetch`` is blocked there, ``<script src>`` is not)::

    <page>_files/index.js          REPORT_DATA.index = {columns, filter vocabularies, one short entry per row}
    <page>_files/rows-00000.js     REPORT_DATA.chunks[0] = [record, ...]   (CHUNK_ROWS records per file)
    <page>_files/media/...         thumbnails (written by the media hook, see :data:`MediaHook`)

The index holds what the filters need for every row (benchmark, category, status, flip, sample id), so filtering
never loads a chunk; a page of the browser loads only the chunks its rows are in.

Row status (the browser's correct / partial / wrong filter), from the saved score on its benchmark's 0–1 per-sample
scale: ``error`` (the row failed), ``unscored`` (no score: an unjudged row), ``correct`` (full score, >= 1),
``partial`` (between 0 and 1: ANLS, VQA accuracy), ``wrong`` (0).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable, Iterable

from evals.aggregate import has_error, is_right
from evals.sample import decode_record

CHUNK_ROWS = 100
STATUSES = ("correct", "partial", "wrong", "unscored", "error")
FLIPS = ("to_right", "to_wrong", "both_right", "both_wrong", "unpaired")
INDEX_FILE = "index.js"
MEDIA_DIR = "media"

RowKey = tuple[str, str, str]  # (benchmark, split, sample_id)
#: ``hook(rows, dest) -> {row_key(row): [media entry, ...]}``: thumbnails of the rows' images and videos written
#: under ``dest``; an entry is ``{"kind": "image", "src": <path under dest>, "name": ...}``, ``{"kind": "video",
#: "name": ..., "frames": [{"src": ..., "t": seconds, "i": frame index}, ...]}``, or either kind with
#: ``"missing": why`` instead of pictures. ``pipelines.report_media`` provides one (it decodes images and videos,
#: which ``evals`` does not).
MediaHook = Callable[[list[dict], Path], dict]

# Per-run fields of a record: the model's side of a row (a comparison has one set per run).
_RUN_FIELDS = ("prediction", "reasoning", "extracted", "score", "error", "finish_reason", "judge")


def row_key(row: dict) -> RowKey:
    return str(row["benchmark"]), str(row.get("split") or ""), str(row["sample_id"])


def row_status(row: dict) -> str:
    """One of :data:`STATUSES` (see the module docstring)."""
    if has_error(row):
        return "error"
    score = row.get("score")
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return "unscored"
    if is_right(row):
        return "correct"
    return "partial" if score > 0 else "wrong"


def flip_of(status_a: str | None, status_b: str | None) -> str:
    """One of :data:`FLIPS` for a sample's statuses in runs A and B (None: not in that run); only a full score
    counts as right, so partial ↔ wrong is ``both_wrong``."""
    if status_a is None or status_b is None:
        return "unpaired"
    a, b = status_a == "correct", status_b == "correct"
    return {(False, True): "to_right", (True, False): "to_wrong", (True, True): "both_right"}.get((a, b), "both_wrong")


def _natural(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def sort_rows(rows: Iterable[dict]) -> list[dict]:
    """Rows in browsing order: by benchmark, split, then sample id with numbers compared as numbers."""
    return sorted(rows, key=lambda r: (str(r["benchmark"]), str(r.get("split") or ""), _natural(str(r["sample_id"]))))


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _sample_fields(row: dict, media: list[dict] | None) -> dict:
    rec = decode_record(row)
    out = {
        "id": str(rec["sample_id"]), "benchmark": rec["benchmark"], "split": rec.get("split"),
        "category": rec.get("category"), "subcategory": rec.get("subcategory"), "question": rec.get("question"),
        "options": rec["options"] or None, "targets": rec["targets"] or None,
        "media_items": _clean(rec.get("media_items")), "media": media or None,
    }
    frames = rec.get("frame_timestamps")
    if frames is not None and not media:
        out["frame_timestamps"] = [round(float(t), 3) for t in frames]
    return out


def _run_fields(row: dict) -> dict:
    out = {k: _clean(row.get(k)) for k in _RUN_FIELDS}
    out["status"] = row_status(row)
    return out


def _compact(obj):
    """``obj`` without None values and empty containers (smaller files; the page shows what is there)."""
    if isinstance(obj, dict):
        return {k: _compact(v) for k, v in obj.items() if v is not None and v != [] and v != {}}
    if isinstance(obj, list):
        return [_compact(v) for v in obj]
    return obj


def report_records(rows: list[dict], media: dict | None = None) -> list[dict]:
    """One browser record per prediction row, in :func:`sort_rows` order."""
    media = media or {}
    return [_compact({**_sample_fields(r, media.get(row_key(r))), **_run_fields(r)}) for r in sort_rows(rows)]


def compare_records(rows_a: list[dict], rows_b: list[dict], media: dict | None = None,
                    flips: dict | None = None) -> list[dict]:
    """One record per sample of either run (paired by benchmark, split and sample id), with each run's side under
    ``a`` / ``b`` and the sample's ``flip``: from ``flips`` (``{row_key: flip}``, e.g. the comparison's own
    list) where given, else :func:`flip_of` the two statuses."""
    media, flips = media or {}, flips or {}
    by_a = {row_key(r): r for r in rows_a}
    by_b = {row_key(r): r for r in rows_b}
    out = []
    for first in sort_rows({**by_b, **by_a}.values()):  # A's sample fields win where both have the sample
        key = row_key(first)
        a, b = by_a.get(key), by_b.get(key)
        rec = _sample_fields(first, media.get(key))
        rec["a"] = _run_fields(a) if a is not None else None
        rec["b"] = _run_fields(b) if b is not None else None
        rec["flip"] = flips.get(key) or flip_of(a and rec["a"]["status"], b and rec["b"]["status"])
        out.append(_compact(rec))
    return out


def _script(name: str, value) -> str:
    # JSON is valid JavaScript; "</" is escaped anyway so that the text could also sit inside a <script> element.
    return f"REPORT_DATA.{name} = " + json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/") + ";\n"


def write_browser_data(folder: Path, records: list[dict], kind: str) -> dict:
    """Write the index and the chunks of ``records`` (``kind``: ``report`` or ``compare``) into ``folder``
    (earlier chunks removed); return the index summary the page template shows (counts per status/flip)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("rows-*.js"):
        old.unlink()
    vocab: dict[str, list[str]] = {"benchmarks": [], "categories": []}
    codes: dict[str, dict[str, int]] = {"benchmarks": {}, "categories": {}}

    def code(table: str, value) -> int:
        if value is None:
            return -1
        if value not in codes[table]:
            codes[table][value] = len(vocab[table])
            vocab[table].append(value)
        return codes[table][value]

    entries = []
    for rec in records:
        if kind == "compare":
            sa, sb = (rec.get(s, {}).get("status") for s in ("a", "b"))
            tail = [STATUSES.index(sa) if sa else -1, STATUSES.index(sb) if sb else -1, FLIPS.index(rec["flip"])]
        else:
            tail = [STATUSES.index(rec["status"])]
        entries.append([code("benchmarks", rec["benchmark"]), code("categories", rec.get("category")), rec["id"], *tail])
    index = {"kind": kind, "count": len(records), "chunk_rows": CHUNK_ROWS, "statuses": list(STATUSES),
             "flips": list(FLIPS), **vocab, "rows": entries}
    (folder / INDEX_FILE).write_text(_script("index", index), encoding="utf-8")
    for start in range(0, len(records), CHUNK_ROWS):
        k = start // CHUNK_ROWS
        (folder / f"rows-{k:05d}.js").write_text(_script(f"chunks[{k}]", records[start:start + CHUNK_ROWS]),
                                                 encoding="utf-8")
    return {"count": len(records), "chunks": math.ceil(len(records) / CHUNK_ROWS)}
