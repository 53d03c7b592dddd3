"""The normalised benchmark sample and its flat record form.

Every reader, whatever the on-disk format, yields :class:`Sample`. The pipeline stores
``sample.to_record()`` (plus ``prediction``, ``extracted``, ``score``, ``error``) as one Parquet row,
and :meth:`evals.benchmarks.base.Benchmark.score` / ``aggregate`` read those records back — so the
record is the stable contract between ``evals`` and ``pipelines``:

=============  ==========================================================================
field          content
=============  ==========================================================================
sample_id      str, unique within (benchmark, split), stable across runs
benchmark      registry name (``mmbench``)
split          split name (``dev``, ``validation``, ``test``)
question       the question text as published (prompt templates are applied later)
options        JSON string of ``{letter: text}`` (``"{}"`` for open questions)
targets        JSON string of the list of accepted answers (letters for multiple choice)
category       primary reporting category or None
subcategory    secondary category or None
group          group key or None: MME image pair, MMBench circular group, Video-MME video
meta           JSON string of extra fields a metric needs (question_type, dataset, duration…)
=============  ==========================================================================

Media are not part of the record: they are bytes or paths that the pipeline hands to the processor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

RECORD_FIELDS = (
    "sample_id",
    "benchmark",
    "split",
    "question",
    "options",
    "targets",
    "category",
    "subcategory",
    "group",
    "meta",
)
JSON_FIELDS = ("options", "targets", "meta")


@dataclass(frozen=True)
class Media:
    """One image or video of a prompt. Exactly one of ``data`` (encoded bytes) or ``path`` is set.

    ``kind`` is ``"image"`` or ``"video"``; a video ``path`` may also be a folder of frame images
    (MVBench ``episodic_reasoning``), in which case the sample's ``meta["data_type"]`` is ``"frame"``.
    """

    kind: str
    data: bytes | None = None
    path: str | None = None

    def __post_init__(self):
        if self.kind not in ("image", "video"):
            raise ValueError(f"Media.kind must be 'image' or 'video', got {self.kind!r}")
        if (self.data is None) == (self.path is None):
            raise ValueError(f"Media needs exactly one of data or path (kind={self.kind!r}, path={self.path!r})")

    @property
    def value(self) -> bytes | str:
        """The bytes or the path, whichever is set (what a chat-message part carries)."""
        return self.data if self.data is not None else self.path  # type: ignore[return-value]


@dataclass
class Sample:
    """One benchmark question, normalised across on-disk formats (see the module docstring)."""

    sample_id: str
    benchmark: str
    split: str
    question: str = ""
    options: dict[str, str] = field(default_factory=dict)
    media: list[Media] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    category: str | None = None
    subcategory: str | None = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The flat, JSON-serialisable record (no media, no error) the pipeline stores per row."""
        return {
            "sample_id": self.sample_id,
            "benchmark": self.benchmark,
            "split": self.split,
            "question": self.question,
            "options": json.dumps(self.options, ensure_ascii=False),
            "targets": json.dumps(self.targets, ensure_ascii=False),
            "category": self.category,
            "subcategory": self.subcategory,
            "group": self.group,
            "meta": json.dumps(self.meta, ensure_ascii=False, sort_keys=True),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Sample":
        """Rebuild a media-less Sample from a record (JSON fields may be strings or decoded)."""
        rec = decode_record(record)
        return cls(
            sample_id=str(rec["sample_id"]),
            benchmark=str(rec["benchmark"]),
            split=str(rec.get("split") or ""),
            question=rec.get("question") or "",
            options=rec["options"],
            targets=rec["targets"],
            category=rec.get("category"),
            subcategory=rec.get("subcategory"),
            group=rec.get("group"),
            meta=rec["meta"],
            error=rec.get("error") if isinstance(rec.get("error"), str) else None,
        )


def _loads(value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, (dict, list)):
        return value
    if isinstance(value, float) and value != value:  # NaN from pandas
        return default
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        return json.loads(value) if value.strip() else default
    raise TypeError(f"expected a JSON string, got {type(value).__name__}")


def decode_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with ``options``/``targets``/``meta`` decoded from JSON and NaN → None."""
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and value != value:
            value = None
        out[key] = value
    out["options"] = {str(k): str(v) for k, v in _loads(out.get("options"), {}).items()}
    out["targets"] = [str(t) for t in _loads(out.get("targets"), [])]
    out["meta"] = dict(_loads(out.get("meta"), {}))
    return out
