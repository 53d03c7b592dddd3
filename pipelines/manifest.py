"""`OUT/manifest.json`: what a run was and what it left — per benchmark its fingerprint and counts, the last run's
settings and resources, and one history entry per invocation.

    start_manifest  written before any work: benchmarks "running", last_run settings/resources/packages
    end_manifest    after the last commit: counts read back from the part files, errors per reason, throughput
    archive_entry   a benchmark's entry whose fingerprint changed → runs/<benchmark>-<fp12>/manifest.json
    record_scoring  after `ernie-vl score`: how each benchmark was scored (rule, or judge with its counts)

Written complete or not at all (`evals.storage.Storage.write_bytes`, local folder or object store): a kill leaves
the previous manifest, never a torn one. `out` is a local path, a URI or an `evals.storage.Storage`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from datetime import datetime, timezone

import pyarrow as pa

from evals.storage import Storage

from .config import EvalConfig, ResourcePlan
from .fingerprint import package_versions
from .progress import BenchmarkProgress, error_reason
from .resume import list_parts, scan_done
from .schema import SCHEMA_VERSION

MANIFEST_FORMAT = "ernie-vl-eval/1"
log = logging.getLogger("pipelines")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_manifest(out) -> dict:
    """The manifest of an earlier run in `out` ({} if none or unreadable)."""
    store = Storage.at(out)
    try:
        return json.loads(store.read_text("manifest.json"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", store.display("manifest.json"))
    return {}


def write_manifest(out, manifest: dict) -> None:
    Storage.at(out).write_text("manifest.json", json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")


def archive_entry(out, name: str, entry: dict) -> None:
    """Keep the manifest entry of a benchmark's earlier fingerprint beside its archived part files."""
    fp = str(entry.get("fingerprint", ""))[:12]
    if not fp:
        return
    Storage.at(out).write_text(f"runs/{name}-{fp}/manifest.json", json.dumps(entry, indent=2, default=str) + "\n")


def _read_rows(pred: Storage, parts: list[str]) -> list[dict]:
    if not parts:
        return []
    return pa.concat_tables([pred.read_table(p) for p in parts], promote_options="default").to_pylist()


def reuse_summary(rows: list[dict]) -> dict:
    """What the replicas did not compute twice, from the rows written (rows of runs before these columns count 0)."""
    done = [r for r in rows if r.get("error") is None and r.get("prompt_tokens")]
    reused_media = sum(r.get("reused_media") or 0 for r in done)
    reused_tokens = sum(r.get("reused_prompt_tokens") or 0 for r in done)
    return {
        "media_encoded": sum(r.get("media_items") or 0 for r in done) - reused_media,
        "media_reused": reused_media,
        "prefix_tokens_reused": reused_tokens,
        "prefix_tokens_computed": sum(r["prompt_tokens"] for r in done) - reused_tokens,
    }


def record_scoring(out, scoring: dict[str, dict], flavor: str) -> None:
    """After `ernie-vl score`: each rescored benchmark's entry says how it was scored now (`scoring`, with the flavor
    and time). A folder without a manifest (predictions from elsewhere) is left without one."""
    m = load_manifest(out)
    if not m:
        return
    for name, record in scoring.items():
        entry = m.setdefault("benchmarks", {}).get(name)
        if entry is not None:
            entry["scoring"] = {**record, "flavor": flavor, "scored_at": utc_now()}
    write_manifest(out, m)


def start_manifest(old: dict, cfg: EvalConfig, plan: ResourcePlan, dtype: str, parts: dict, fps: dict,
                   started_at: str, notes: list[str]) -> dict:
    """The manifest of a run that starts: `old`'s benchmarks and history kept, this run's benchmarks "running"."""
    m = {
        "format": MANIFEST_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "benchmarks": dict(old.get("benchmarks", {})),
        "history": list(old.get("history", [])),
    }
    from evals.registry import get_benchmark

    for name, fp in fps.items():
        prev = m["benchmarks"].get(name) or {}
        spec = next(s for s in cfg.benchmarks if s.name == name)
        m["benchmarks"][name] = {
            "name": name,
            "fingerprint": fp,
            "fingerprint_parts": parts[name],
            "status": "running",
            "data": spec.data,
            "limit": spec.limit,
            "split": spec.split or get_benchmark(name).default_split,  # the split this run evaluates
            "thinking": parts[name].get("thinking") is not None,  # reasoning on (fingerprint_parts: its settings)
        }
        if prev.get("fingerprint") == fp and prev.get("progress"):
            m["benchmarks"][name]["progress"] = prev["progress"]  # kept if this invocation writes nothing
    m["last_run"] = {
        "started_at": started_at,
        "finished_at": None,
        "status": "running",
        "benchmarks": sorted(fps),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": sys.argv,
        "config": cfg.to_dict(),
        "dtype": dtype,
        "resources": {
            "device": plan.device,
            "cluster_cpus": plan.cluster_cpus,
            "cluster_gpus": plan.cluster_gpus,
            "preprocess": vars(plan.preprocess),
            "replica": vars(plan.replica),
            "score": vars(plan.score),
            "torch_threads": plan.torch_threads,
        },
        "packages": package_versions(),
        "notes": notes,
    }
    return m


def end_manifest(m: dict, out, fps: dict, progress: dict[str, BenchmarkProgress], notes: list[str],
                 t_start: float) -> dict:
    """`m` completed: per benchmark the counts of its part files and this invocation's progress, the run's status,
    and a history entry."""
    pred = Storage.at(out).child("predictions")
    for name, fp in fps.items():
        done = scan_done(pred, name, fp)
        prog = progress[name]
        rows = _read_rows(pred, list_parts(pred, name, fp))
        reasons: dict[str, int] = {}
        examples: dict[str, str] = {}
        for r in rows:
            if r.get("error"):
                k = error_reason(r["error"])
                reasons[k] = reasons.get(k, 0) + 1
                examples.setdefault(k, r["error"][:300])
        entry = m["benchmarks"][name]
        entry.update(
            total=prog.total,
            rows=len(done.keys),
            done=len(done.keys) - len(done.failed),
            failed=len(done.failed),
            skipped=prog.skipped,
            written=prog.written,
            missing=max(0, prog.total - prog.skipped - prog.written),
            errors=reasons,
            error_examples=examples,
            parts=len(list_parts(pred, name, fp)),
            reuse=reuse_summary(rows),
        )
        if prog.written or "progress" not in entry:  # throughput of the last invocation that did work
            entry["progress"] = prog.summary()
        entry["status"] = "complete" if entry["missing"] == 0 else "incomplete"
    lr = m["last_run"]
    lr.update(finished_at=utc_now(), elapsed_s=round(time.monotonic() - t_start, 3), notes=notes)
    lr["status"] = "complete" if all(m["benchmarks"][n]["status"] == "complete" for n in fps) else "incomplete"
    m["history"].append({k: lr[k] for k in ("started_at", "finished_at", "status", "benchmarks", "elapsed_s")}
                        | {"written": {n: progress[n].written for n in fps},
                           "skipped": {n: progress[n].skipped for n in fps}})
    return m
