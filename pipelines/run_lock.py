"""One writer per output folder at a time: `RunLock` (`ernie-vl eval` and `ernie-vl score` hold it).

**Local folder**: an exclusive advisory `flock` on `OUT/.lock`. The kernel releases it when the process dies, so a
`kill -9` never leaves a stale lock.

**Object stores and HDFS** (`evals.storage`; no locks, no rename): a lease made of objects, one per contender,
`OUT/.lock/<time>-<id>.json` = `{host, pid, started_at, beat}`:

1. acquire: write the own object, start the heartbeat (every `ttl / 4` the holder reads its object back and
   rewrites it with `beat + 1`), then list `OUT/.lock/`. Each other object is
   * *dead* when it names this host and a process id that no longer runs (a killed driver on this machine): it is
     deleted at once;
   * *live* when its `beat` changes while it is watched (its owner heartbeats): this contender withdraws (deletes
     its object) and refuses, naming the holder;
   * *stale* when its `beat` stays the same for `ttl` seconds (its owner died on another host): it is deleted.
   The listing is repeated until only the own object is left.
2. release: stop the heartbeat, delete the own object.

What is guaranteed, on a store whose listings show every completed write (S3, GCS, MinIO): two contenders never
both hold the lock while each heartbeats at least once per `ttl` — for both to win, each must have listed before the
other wrote, yet each writes before it lists. Two that start together may both withdraw (both refuse; start one
again). A holder that stops heartbeating for longer than `ttl` (a stopped process, a network partition) can be
declared stale and replaced; its heartbeat then finds its object gone, marks the lock lost, and `check()` — called
by the driver before each commit — stops it with an error. There are no fencing tokens: a write already in flight
still lands, and a stall that ended between a heartbeat's read and its rewrite goes unnoticed (the rewrite brings the
object back), so both drivers write until one ends; the reconciliation pass of either run then removes the duplicate
rows (part files are named by their sample ids, resume.py). A driver killed on another host blocks the folder for
`ttl` seconds (`ERNIE_VL_LOCK_TTL_S`, default 30).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from evals.storage import LOCAL, Storage

log = logging.getLogger("pipelines")
LOCK_NAME = ".lock"
DEFAULT_TTL_S = 30.0


def _ttl_from_env() -> float:
    raw = os.environ.get("ERNIE_VL_LOCK_TTL_S")
    if raw is None:
        return DEFAULT_TTL_S
    try:
        ttl = float(raw)
    except ValueError:
        raise ValueError(f"ERNIE_VL_LOCK_TTL_S must be a number of seconds, got {raw!r}") from None
    if ttl <= 0:
        raise ValueError(f"ERNIE_VL_LOCK_TTL_S must be > 0, got {raw!r}")
    return ttl


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


class RunLock:
    """The lock of output folder `out` (a local path, a URI or an `evals.storage.Storage`); a context manager."""

    def __init__(self, out, ttl_s: float | None = None):
        self.store = Storage.at(out)
        self.ttl = ttl_s if ttl_s is not None else _ttl_from_env()
        self.lost: str | None = None  # why the lease was lost (object stores), None while held
        self._fd: int | None = None
        self._name: str | None = None
        self._record: dict = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RunLock":
        if self.store.kind == LOCAL:
            self._flock()
        else:
            self._lease()
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._name is not None:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.store.delete(f"{LOCK_NAME}/{self._name}")
            self._name = None

    def check(self) -> None:
        """Raise if the lease was lost (object stores: another driver declared this one stale)."""
        if self.lost:
            raise RuntimeError(f"lost the lock of {self.store}: {self.lost}; stopping before writing more")

    # ------------------------------------------------------------------------------------------- local folder

    def _flock(self) -> None:
        path = self.store.local_path / LOCK_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise RuntimeError(f"another ernie-vl run is writing to {self.store} (lock {path})") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid()}).encode())
        self._fd = fd

    # ------------------------------------------------------------------------------------------- lease

    def _lease(self) -> None:
        self._name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self._record = {"host": socket.gethostname(), "pid": os.getpid(), "beat": 0,
                        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._write_own()
        self._thread = threading.Thread(target=self._heartbeat, name="ernie-vl-run-lock", daemon=True)
        self._thread.start()
        try:
            self._wait_alone()
        except BaseException:
            self.__exit__()
            raise

    def _write_own(self) -> None:
        self.store.write_text(f"{LOCK_NAME}/{self._name}", json.dumps(self._record))

    def _read(self, name: str) -> dict | None:
        try:
            return json.loads(self.store.read_text(f"{LOCK_NAME}/{name}"))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # unreadable: watched like any other (a stale one never changes)

    def _others(self) -> list[str]:
        return [n for n in self.store.files(LOCK_NAME) if n.endswith(".json") and n != self._name]

    def _wait_alone(self) -> None:
        """Return once the own object is the only one (module docstring, step 1); raise if another is live."""
        while True:
            seen = {n: self._read(n) for n in self._others()}
            seen = {n: r for n, r in seen.items() if r is not None}
            if not seen:
                return
            host = socket.gethostname()
            for name, rec in list(seen.items()):
                if rec.get("host") == host and isinstance(rec.get("pid"), int) and not _pid_running(rec["pid"]):
                    log.warning("taking over the lock of %s left by process %s (no longer running)", self.store,
                                rec["pid"])
                    self.store.delete(f"{LOCK_NAME}/{name}")
                    del seen[name]
            deadline = time.monotonic() + self.ttl
            while seen and time.monotonic() < deadline:
                time.sleep(min(1.0, self.ttl / 8))
                for name, rec in list(seen.items()):
                    now = self._read(name)
                    if now is None:  # released meanwhile
                        del seen[name]
                    elif now != rec:
                        raise RuntimeError(
                            f"another ernie-vl run is writing to {self.store} (host {now.get('host')}, pid "
                            f"{now.get('pid')}, since {now.get('started_at')}; lock {self.store.display(LOCK_NAME)})")
            for name in seen:  # unchanged for a whole ttl: its owner is gone
                log.warning("taking over the stale lock %s of %s", name, self.store)
                self.store.delete(f"{LOCK_NAME}/{name}")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if self._read(self._name) is None:
                    self.lost = "its lock object was deleted by another run that found it stale"
                    log.error("lost the lock of %s: %s", self.store, self.lost)
                    return
                self._record["beat"] += 1
                self._write_own()
            except OSError as exc:  # a failed beat is retried at the next one; ttl allows several
                log.warning("lock heartbeat of %s failed: %s", self.store, exc)
