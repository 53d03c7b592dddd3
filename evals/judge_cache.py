"""The judge cache: every judge reply of a run, kept under ``OUT/judge_cache/`` so that a rescore or a rerun never
asks the judge the same question twice.

Key: the judge model and the exact prompt (sha256 of both). The reply is the judge's text as received; what it means
is decided later by the benchmark's parse rule, so a change of parse rule needs no new request.

Files: ``OUT/judge_cache/part-<UTC time>-<uuid8>.parquet`` with the columns of :data:`CACHE_COLUMNS`. New replies
are *appended* as new files, each complete or absent, never torn (:mod:`evals.storage`: a temporary file fsynced and
renamed in a local folder, one PUT on object storage);
no file is ever rewritten in place, so a killed scoring run loses at most the replies of its last unwritten batch.
Two processes scoring the same folder write different files and at worst both ask a prompt once. Reading takes
every part file; for a key present twice the later file wins (the replies are equal in practice). More than
:data:`COMPACT_AT` files are merged into one when the cache is opened (the merged file is written before the old
ones are removed). ``duckdb.sql("select * from 'OUT/judge_cache/*.parquet'")`` reads it without a helper.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone

import pyarrow as pa

from evals.storage import Storage

CACHE_DIR = "judge_cache"
COMPACT_AT = 64
CACHE_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("key", pa.string(), "sha256 of judge model + NUL + prompt"),
    ("judge_model", pa.string(), "the judge model named in the request"),
    ("prompt", pa.string(), "the user message sent to the judge"),
    ("reply", pa.string(), "the judge's reply text (choices[0].message.content)"),
    ("max_tokens", pa.int32(), "max_tokens of the request"),
    ("benchmark", pa.string(), "benchmark that first asked this prompt"),
    ("asked_at", pa.string(), "UTC time the reply arrived (ISO 8601)"),
]
CACHE_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in CACHE_COLUMNS])


def cache_key(model: str, prompt: str) -> str:
    """The cache key of one judge question: sha256 hex of ``model``, a NUL byte and ``prompt`` (UTF-8)."""
    return hashlib.sha256(model.encode() + b"\0" + prompt.encode()).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JudgeCache:
    """Replies by (judge model, prompt), read from and appended to ``<out_dir>/judge_cache/``."""

    def __init__(self, out_dir):
        self.folder = Storage.at(out_dir).child(CACHE_DIR)
        self._replies: dict[str, str] = {}
        parts = self.parts()
        for part in parts:
            table = self.folder.read_table(part, columns=["key", "reply"])
            self._replies.update(zip(table.column("key").to_pylist(), table.column("reply").to_pylist()))
        if len(parts) > COMPACT_AT:
            self._compact(parts)

    def parts(self) -> list[str]:
        """Names of the complete part files, oldest first (names start with their UTC time)."""
        return [n for n in self.folder.files() if n.startswith("part-") and n.endswith(".parquet")]

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, model: str, prompt: str) -> str | None:
        """The cached reply, or None if this model was never asked this prompt."""
        return self._replies.get(cache_key(model, prompt))

    def add(self, entries: list[dict]) -> str | None:
        """Append replies (dicts with ``judge_model, prompt, reply, max_tokens, benchmark``) as one new part file."""
        if not entries:
            return None
        rows = [dict(e, key=cache_key(e["judge_model"], e["prompt"]), asked_at=e.get("asked_at") or utc_now())
                for e in entries]
        path = self._write(rows)
        self._replies.update((r["key"], r["reply"]) for r in rows)
        return path

    def _write(self, rows: list[dict]) -> str:
        """A new part file (complete or absent) holding ``rows``; returns its name."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        name = f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        table = pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in CACHE_SCHEMA.names}, schema=CACHE_SCHEMA)
        self.folder.write_table(name, table)
        return name

    def _compact(self, parts: list[str]) -> None:
        """Merge ``parts`` into one file (last copy of a key wins), then remove them."""
        table = pa.concat_tables([self.folder.read_table(p).cast(CACHE_SCHEMA) for p in parts])
        last = {key: i for i, key in enumerate(table.column("key").to_pylist())}
        merged = table.take(pa.array(sorted(last.values()), type=pa.int64()))
        self._write(merged.to_pylist())
        for part in parts:
            self.folder.delete(part)
