"""Exactly-once output: atomic part files, the resume scan, reconciliation and per-fingerprint run folders.

The rules that make a run killed at any moment and rerun end with every sample exactly once:

1. Only the driver writes predictions (Ray tasks return rows; they never touch the output folder), and it writes a
   part file to a temporary name in the same folder, fsyncs it and `os.replace`s it to its final name. A part file
   either exists complete or not at all; a kill leaves at most a `.tmp-*` file, which the next run deletes.
2. A part file's name is `part-<benchmark>-<fp12>-<h16>.parquet`, `h16` a hash of its sorted sample keys, so
   writing the same samples twice (a retried batch) replaces the file instead of adding one.
3. A rerun reads the keys of every complete part file of the same benchmark and fingerprint and feeds only the
   other samples to the pipeline.
4. `reconcile` (run at the start and at the end) removes any key that appears in two part files from all but the
   first one (by name), rewriting that file atomically: duplicates cannot survive even an unforeseen writer.
5. Part files of another fingerprint are moved to `runs/<benchmark>-<fp12>/predictions/`, and moved back if that
   fingerprint is run again: results of different settings are never mixed and never lost.
6. One driver per output folder at a time (`RunLock`, an advisory `flock` released by the kernel on kill -9).

Ray Data's own checkpointing is at-least-once with respect to the sink and is not used.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import KEY_COLUMNS, PREDICTIONS_SCHEMA

PART_RE = re.compile(r"^part-(?P<benchmark>[A-Za-z0-9_.]+)-(?P<fp>[0-9a-f]{12})-(?P<ids>[0-9a-f]{16})\.parquet$")
TMP_PREFIX = ".tmp-"
_NAME_OK = re.compile(r"^[A-Za-z0-9_.]+$")


def sample_key(split, sample_id) -> str:
    """The identity of a sample within a benchmark."""
    return f"{split or ''}\x1f{sample_id}"


def part_name(benchmark: str, fingerprint: str, keys) -> str:
    if not _NAME_OK.match(benchmark):
        raise ValueError(f"benchmark name {benchmark!r} may only contain letters, digits, '_' and '.'")
    h = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
    return f"part-{benchmark}-{fingerprint[:12]}-{h}.parquet"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a partial one."""
    tmp = path.parent / f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_table(path: Path, table: pa.Table) -> None:
    tmp = path.parent / f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_part(pred_dir: Path, benchmark: str, fingerprint: str, table: pa.Table) -> Path:
    """Atomically write one part file of `benchmark` rows (sorted by key) and return its path."""
    if table.num_rows == 0:
        raise ValueError("refusing to write an empty part file")
    keys = [sample_key(s, i) for s, i in zip(table.column("split").to_pylist(), table.column("sample_id").to_pylist())]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a part file of {benchmark} would hold a sample twice")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    table = table.take(pa.array(order, type=pa.int64())).cast(PREDICTIONS_SCHEMA)
    path = pred_dir / part_name(benchmark, fingerprint, keys)
    atomic_write_table(path, table)
    return path


def list_parts(pred_dir: Path, benchmark: str | None = None, fingerprint: str | None = None) -> list[Path]:
    """Complete part files in `pred_dir`, optionally of one benchmark / fingerprint, sorted by name."""
    if not pred_dir.is_dir():
        return []
    out = []
    for p in pred_dir.iterdir():
        m = PART_RE.match(p.name)
        if not m:
            continue
        if benchmark is not None and m["benchmark"] != benchmark:
            continue
        if fingerprint is not None and m["fp"] != fingerprint[:12]:
            continue
        out.append(p)
    return sorted(out)


def remove_stale_tmp(folder: Path) -> int:
    """Delete temporary files that a killed writer left behind (callers hold the RunLock)."""
    n = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(TMP_PREFIX):
                p.unlink(missing_ok=True)
                n += 1
    return n


def read_keys(path: Path) -> list[str]:
    t = pq.read_table(path, columns=list(KEY_COLUMNS))
    return [sample_key(s, i) for s, i in zip(t.column("split").to_pylist(), t.column("sample_id").to_pylist())]


@dataclass
class DoneSet:
    """Keys already written for one benchmark + fingerprint, and which of them are error rows."""

    keys: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    parts: int = 0


def scan_done(pred_dir: Path, benchmark: str, fingerprint: str) -> DoneSet:
    """Read the keys (and error flags) of every complete part file of `benchmark` at `fingerprint`."""
    done = DoneSet()
    for p in list_parts(pred_dir, benchmark, fingerprint):
        t = pq.read_table(p, columns=[*KEY_COLUMNS, "error"])
        for s, i, e in zip(t.column("split").to_pylist(), t.column("sample_id").to_pylist(),
                           t.column("error").to_pylist()):
            k = sample_key(s, i)
            done.keys.add(k)
            if e is not None:
                done.failed.add(k)
        done.parts += 1
    return done


def reconcile(pred_dir: Path, benchmark: str, fingerprint: str) -> int:
    """Make every key appear in exactly one part file; return the number of duplicate rows removed.

    The first file (by name) that holds a key keeps it; later files are rewritten without it (or deleted if nothing
    is left). Each rewrite is atomic, so a kill during reconciliation leaves a state this function repairs.
    """
    cache: dict[str, list[str]] = {}
    removed = 0
    while True:  # one repair per pass; every pass removes at least one row, so this ends
        seen: set[str] = set()
        for p in list_parts(pred_dir, benchmark, fingerprint):
            keys = cache.get(p.name)
            if keys is None:
                keys = cache[p.name] = read_keys(p)
            keep = [j for j, k in enumerate(keys) if k not in seen]
            if len(keep) < len(keys):
                break
            seen.update(keys)
        else:
            return removed
        removed += len(keys) - len(keep)
        if keep:
            target = pred_dir / part_name(benchmark, fingerprint, [keys[j] for j in keep])
            if not target.exists():  # else a file with exactly these keys exists: dropping `p` is enough
                t = pq.read_table(p).take(pa.array(keep, type=pa.int64()))
                write_part(pred_dir, benchmark, fingerprint, t)
        p.unlink()
        cache.pop(p.name, None)


def archive_other_fingerprints(out: Path, benchmark: str, fingerprint: str) -> list[str]:
    """Move `benchmark` part files of other fingerprints to `runs/<benchmark>-<fp12>/predictions/` and bring back
    those of `fingerprint` from its run folder. Returns a note per moved group (for the summary)."""
    pred = out / "predictions"
    notes = []
    moved: dict[str, int] = {}
    for p in list_parts(pred, benchmark):
        fp = PART_RE.match(p.name)["fp"]
        if fp != fingerprint[:12]:
            dst = out / "runs" / f"{benchmark}-{fp}" / "predictions"
            dst.mkdir(parents=True, exist_ok=True)
            os.replace(p, dst / p.name)
            moved[fp] = moved.get(fp, 0) + 1
    for fp, n in moved.items():
        notes.append(f"{benchmark}: {n} part file(s) of fingerprint {fp} moved to runs/{benchmark}-{fp}/ (settings changed)")
    back = out / "runs" / f"{benchmark}-{fingerprint[:12]}" / "predictions"
    restored = 0
    if back.is_dir():
        pred.mkdir(parents=True, exist_ok=True)
        for p in list_parts(back, benchmark, fingerprint):
            os.replace(p, pred / p.name)
            restored += 1
        remove_stale_tmp(back)
        shutil.rmtree(back.parent, ignore_errors=True)
    if restored:
        notes.append(f"{benchmark}: {restored} part file(s) of this fingerprint restored from runs/")
    return notes


class RunLock:
    """An exclusive advisory lock on `OUT/.lock`: one driver per output folder. The kernel releases it when the
    process dies, so a kill -9 never leaves a stale lock."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise RuntimeError(f"another ernie-vl run is writing to {self.path.parent} (lock {self.path})") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid()}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
