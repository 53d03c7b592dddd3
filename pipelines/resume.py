"""Exactly-once output: complete part files, the resume scan, reconciliation and per-fingerprint run folders, on any
storage `evals.storage` reaches (a local folder, S3, GCS, HDFS).

The rules that make a run killed at any moment and rerun end with every sample exactly once:

1. Only the driver writes predictions (Ray tasks return rows; they never touch the output folder), and every file it
   writes is complete or absent (`evals.storage.Storage.write_table`): locally a temporary file fsynced and renamed,
   on an object store one PUT under the final name, which appears whole or not at all. A kill leaves at most a
   `.tmp-*` file (local, HDFS), which the next run deletes, or an incomplete upload that no listing shows (S3).
2. A part file's name is `part-<benchmark>-<fp12>-<h16>.parquet`, `h16` a hash of its sorted sample keys, so
   writing the same samples twice (a retried batch) replaces the file instead of adding one. Names are derived
   from content, so object stores need no rename: the part file is its own commit record.
3. A rerun reads the keys of every complete part file of the same benchmark and fingerprint and feeds only the
   other samples to the pipeline.
4. `reconcile` (run at the start and at the end) removes any key that appears in two part files from all but the
   first one (by name): the trimmed file is written under its new name before the old one is deleted, so a kill in
   between leaves a duplicate for the next reconcile, never a loss.
5. Part files of another fingerprint are moved to `runs/<benchmark>-<fp12>/predictions/`, and moved back if that
   fingerprint is run again: results of different settings are never mixed and never lost. (On an object store a
   move is a copy then a delete; a kill in between leaves the file in both places and the next run moves it again.)
6. One driver per output folder at a time (`run_lock.RunLock`: a `flock` locally, a heartbeated lease on object
   stores).

Ray Data's own checkpointing is at-least-once with respect to the sink and is not used.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import pyarrow as pa

from evals.storage import TMP_PREFIX, Storage  # noqa: F401  (TMP_PREFIX: the names readers skip)

from .run_lock import RunLock  # noqa: F401  (rule 6; imported from here by the CLI and the tests)
from .schema import KEY_COLUMNS, PREDICTIONS_SCHEMA

PART_RE = re.compile(r"^part-(?P<benchmark>[A-Za-z0-9_.]+)-(?P<fp>[0-9a-f]{12})-(?P<ids>[0-9a-f]{16})\.parquet$")
_NAME_OK = re.compile(r"^[A-Za-z0-9_.]+$")


def sample_key(split, sample_id) -> str:
    """The identity of a sample within a benchmark."""
    return f"{split or ''}\x1f{sample_id}"


def part_name(benchmark: str, fingerprint: str, keys) -> str:
    if not _NAME_OK.match(benchmark):
        raise ValueError(f"benchmark name {benchmark!r} may only contain letters, digits, '_' and '.'")
    h = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
    return f"part-{benchmark}-{fingerprint[:12]}-{h}.parquet"


def _split(path) -> tuple[Storage, str]:
    text = str(path).rstrip("/")
    folder, _, name = text.rpartition("/")
    return Storage.at(folder or "."), name


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to the file `path` (a local path or a URI) so that readers see the old file or the new one,
    never a partial one."""
    folder, name = _split(path)
    folder.write_bytes(name, data)


def atomic_write_table(path, table: pa.Table) -> None:
    folder, name = _split(path)
    folder.write_table(name, table)


def write_part(pred_dir, benchmark: str, fingerprint: str, table: pa.Table) -> str:
    """Write one part file of `benchmark` rows (sorted by key) into `pred_dir`, complete or absent; return its
    name."""
    if table.num_rows == 0:
        raise ValueError("refusing to write an empty part file")
    keys = [sample_key(s, i) for s, i in zip(table.column("split").to_pylist(), table.column("sample_id").to_pylist())]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a part file of {benchmark} would hold a sample twice")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    table = table.take(pa.array(order, type=pa.int64())).cast(PREDICTIONS_SCHEMA)
    name = part_name(benchmark, fingerprint, keys)
    Storage.at(pred_dir).write_table(name, table)
    return name


def list_parts(pred_dir, benchmark: str | None = None, fingerprint: str | None = None) -> list[str]:
    """Names of the complete part files in `pred_dir`, optionally of one benchmark / fingerprint, sorted."""
    out = []
    for name in Storage.at(pred_dir).files():
        m = PART_RE.match(name)
        if not m:
            continue
        if benchmark is not None and m["benchmark"] != benchmark:
            continue
        if fingerprint is not None and m["fp"] != fingerprint[:12]:
            continue
        out.append(name)
    return sorted(out)


def remove_stale_tmp(folder) -> int:
    """Delete temporary files that a killed writer left behind (callers hold the RunLock)."""
    return Storage.at(folder).remove_tmp()


def read_keys(pred_dir, name: str) -> list[str]:
    t = Storage.at(pred_dir).read_table(name, columns=list(KEY_COLUMNS))
    return [sample_key(s, i) for s, i in zip(t.column("split").to_pylist(), t.column("sample_id").to_pylist())]


@dataclass
class DoneSet:
    """Keys already written for one benchmark + fingerprint, and which of them are error rows."""

    keys: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    parts: int = 0


def scan_done(pred_dir, benchmark: str, fingerprint: str) -> DoneSet:
    """Read the keys (and error flags) of every complete part file of `benchmark` at `fingerprint`."""
    pred = Storage.at(pred_dir)
    done = DoneSet()
    for name in list_parts(pred, benchmark, fingerprint):
        t = pred.read_table(name, columns=[*KEY_COLUMNS, "error"])
        for s, i, e in zip(t.column("split").to_pylist(), t.column("sample_id").to_pylist(),
                           t.column("error").to_pylist()):
            k = sample_key(s, i)
            done.keys.add(k)
            if e is not None:
                done.failed.add(k)
        done.parts += 1
    return done


def reconcile(pred_dir, benchmark: str, fingerprint: str) -> int:
    """Make every key appear in exactly one part file; return the number of duplicate rows removed.

    The first file (by name) that holds a key keeps it; later files are rewritten without it (or deleted if nothing
    is left). The trimmed file is complete before the old one is deleted, so a kill during reconciliation leaves a
    state this function repairs.
    """
    pred = Storage.at(pred_dir)
    cache: dict[str, list[str]] = {}
    removed = 0
    while True:  # one repair per pass; every pass removes at least one row, so this ends
        seen: set[str] = set()
        for name in list_parts(pred, benchmark, fingerprint):
            keys = cache.get(name)
            if keys is None:
                keys = cache[name] = read_keys(pred, name)
            keep = [j for j, k in enumerate(keys) if k not in seen]
            if len(keep) < len(keys):
                break
            seen.update(keys)
        else:
            return removed
        removed += len(keys) - len(keep)
        if keep:
            target = part_name(benchmark, fingerprint, [keys[j] for j in keep])
            if not pred.exists(target):  # else a file with exactly these keys exists: dropping `name` is enough
                t = pred.read_table(name).take(pa.array(keep, type=pa.int64()))
                write_part(pred, benchmark, fingerprint, t)
        pred.delete(name)
        cache.pop(name, None)


def archive_other_fingerprints(out, benchmark: str, fingerprint: str) -> list[str]:
    """Move `benchmark` part files of other fingerprints to `runs/<benchmark>-<fp12>/predictions/` and bring back
    those of `fingerprint` from its run folder. Returns a note per moved group (for the summary)."""
    out = Storage.at(out)
    notes = []
    moved: dict[str, int] = {}
    for name in list_parts(out.child("predictions"), benchmark):
        fp = PART_RE.match(name)["fp"]
        if fp != fingerprint[:12]:
            out.move(f"predictions/{name}", f"runs/{benchmark}-{fp}/predictions/{name}")
            moved[fp] = moved.get(fp, 0) + 1
    for fp, n in moved.items():
        notes.append(f"{benchmark}: {n} part file(s) of fingerprint {fp} moved to runs/{benchmark}-{fp}/ (settings changed)")
    back = f"runs/{benchmark}-{fingerprint[:12]}"
    restored = 0
    if out.is_dir(f"{back}/predictions"):
        for name in list_parts(out.child(f"{back}/predictions"), benchmark, fingerprint):
            out.move(f"{back}/predictions/{name}", f"predictions/{name}")
            restored += 1
        out.delete_tree(back)
    if restored:
        notes.append(f"{benchmark}: {restored} part file(s) of this fingerprint restored from runs/")
    return notes
