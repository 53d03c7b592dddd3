"""The batch evaluation job: benchmark files + checkpoint → Parquet predictions, metrics and a manifest.

    driver: evals readers ─► resume filter ─► input blocks (object store)
    Ray Data (streaming):  PreprocessStage (CPU actors) ─► ReplicaStage (model actors) ─► ScoreStage (CPU actor)
    driver: iter_batches ─► atomic part files + live progress ─► reconcile ─► metrics.parquet + manifest.json

The driver is the only writer (resume.py explains the exactly-once rules). It reads the samples itself because it
must know which are already done (resume) and how many there are (progress/ETA); media bytes go straight into the
object store in blocks of `batch_size` rows, so the driver never holds a whole dataset.

`run_eval(cfg)` is the library entry point; the CLI (`ernie-vl eval`) and the benchmark harness call it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .config import EvalConfig, ResourcePlan, plan_resources
from .fingerprint import (benchmark_fingerprint_parts, common_parts, diff_parts, fingerprint_of, package_versions)
from .progress import BenchmarkProgress, ProgressPrinter, error_reason
from .resume import (RunLock, archive_other_fingerprints, atomic_write_bytes, atomic_write_table, list_parts,
                     reconcile, remove_stale_tmp, sample_key, scan_done, write_part)
from .schema import SCHEMA_VERSION, metrics_table
from .stages import input_row, input_table
from .trace import trace

MANIFEST_FORMAT = "ernie-vl-eval/1"
log = logging.getLogger("pipelines")


@dataclass
class RunResult:
    """What `run_eval` did: per-benchmark summaries (as in the manifest), paths and notes."""

    out: Path
    manifest: dict
    metrics: list[dict]
    notes: list[str] = field(default_factory=list)
    started_ray: bool = False  # run_eval started a local Ray instance (the caller may shut it down)

    @property
    def complete(self) -> bool:
        return all(b["missing"] == 0 for b in self.manifest["benchmarks"].values()
                   if b["name"] in self.manifest["last_run"]["benchmarks"])


def _utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def ensure_ray(num_cpus: int | None = None) -> bool:
    """Connect to Ray: the running session, the cluster named by RAY_ADDRESS, or a new local one.

    Returns True when this call started Ray (the caller then shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=True)
        return True
    # a local cluster: make this checkout importable in the workers even without `pip install -e`
    root = str(Path(__file__).resolve().parents[1])
    pp = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": root + (os.pathsep + pp if pp else "")}
    ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=True)
    return True


def _configure_ray_data(verbose: bool) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # our per-benchmark line replaces the per-operator bars
    ctx.execution_options.preserve_order = False
    ctx.execution_options.verbose_progress = False
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours


def resolved_dtype(cfg: EvalConfig, plan: ResourcePlan) -> str:
    """The dtype the replicas run in (fingerprinted): as asked, else bfloat16 on GPUs, else the checkpoint's own
    ("auto": the checkpoint identity covers it)."""
    if cfg.dtype:
        return cfg.dtype
    return "bfloat16" if plan.device == "cuda" else "auto"


def build_dataset(refs: list, cfg: EvalConfig, plan: ResourcePlan, model_path: Path, fingerprints: dict[str, str],
                  dtype: str):
    """The Ray Data plan: input blocks → preprocess → replicas → score."""
    import warnings

    import ray.data

    from .replica import ReplicaStage, replica_ray_args
    from .stages import PreprocessStage, ScoreStage

    # NOTE: max_restarts / max_task_retries have no named map_batches parameter in Ray 2.60 and go through the
    # deprecated **ray_remote_args (Ray's own docs still show map_batches(..., max_restarts=0)); bounded retries
    # matter here (a sample that kills its actor every time must not loop forever), so we keep them and silence it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
        ds = ray.data.from_arrow_refs(refs)
        ds = ds.map_batches(
            PreprocessStage,
            fn_constructor_kwargs=dict(model_path=str(model_path), flavor=cfg.flavor, max_new_tokens=cfg.max_new_tokens,
                                       pack_rows=cfg.batch_size * cfg.pack_batches,
                                       pack_tokens=cfg.batch_tokens * cfg.pack_batches,
                                       max_prompt_tokens=cfg.max_prompt_tokens),
            batch_size=cfg.batch_size * cfg.pack_batches,
            batch_format="pyarrow",
            zero_copy_batch=True,
            max_restarts=2,
            max_task_retries=2,
            **plan.preprocess.map_batches_kwargs(),
        )
        ds = ds.map_batches(
            ReplicaStage,
            fn_constructor_kwargs=dict(model_path=str(model_path), dtype=dtype, device=plan.device,
                                       torch_threads=plan.torch_threads, expert_shards=cfg.expert_shards,
                                       batch_size=cfg.batch_size, batch_tokens=cfg.batch_tokens,
                                       generation=cfg.generation()),
            batch_size=1,  # one pack (a work-sized model batch) per call
            batch_format="pyarrow",
            **replica_ray_args(cfg.max_replica_restarts),
            **plan.replica.map_batches_kwargs(),
        )
        ds = ds.map_batches(
            ScoreStage,
            fn_constructor_kwargs=dict(model_path=str(model_path), flavor=cfg.flavor, fingerprints=fingerprints,
                                       model_name=model_path.name),
            batch_size=None,
            batch_format="pyarrow",
            max_restarts=2,
            max_task_retries=2,
            **plan.score.map_batches_kwargs(),
        )
    return ds


def _load_manifest(out: Path) -> dict:
    p = out / "manifest.json"
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            log.warning("ignoring unreadable %s", p)
    return {}


def _write_manifest(out: Path, manifest: dict) -> None:
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n").encode())


def _read_rows(parts: list[Path]) -> list[dict]:
    if not parts:
        return []
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default").to_pylist()


def compute_metrics(out: Path) -> list[dict]:
    """Metric rows of every benchmark in `OUT/predictions` (grouped by benchmark and flavor)."""
    from evals.registry import get_benchmark

    pred = out / "predictions"
    by: dict[str, list[Path]] = {}
    for p in list_parts(pred):
        by.setdefault(p.name.split("-")[1], []).append(p)
    metrics: list[dict] = []
    for name in sorted(by):
        rows = _read_rows(by[name])
        flavors = sorted({r.get("flavor") or "official" for r in rows})
        bench = get_benchmark(name)
        for fl in flavors:
            metrics += bench.aggregate([r for r in rows if (r.get("flavor") or "official") == fl], fl)
    return metrics


def check_inputs(cfg: EvalConfig) -> None:
    """Cheap checks before any cluster work: replica options, benchmark names, data paths and layouts
    (`load(..., limit=0)` detects the layout and raises `DatasetError` for a bad path), the checkpoint folder."""
    from evals.registry import get_benchmark

    from .replica import check_replica_options

    check_replica_options(cfg.expert_shards)
    for spec in cfg.benchmarks:
        list(get_benchmark(spec.name).load(spec.data, 0))
    cfg.model_path()


def local_resources(num_cpus: int | None) -> dict:
    """What a local Ray instance started by `ensure_ray(num_cpus)` will report (used to plan before starting it)."""
    import torch

    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def run_eval(cfg: EvalConfig, *, stream=None, verbose: bool = False, num_cpus: int | None = None) -> RunResult:
    """Run (or resume) one evaluation; see the module docstring. Raises on dataset/config errors.

    Uses the running Ray session, or the cluster named by RAY_ADDRESS, or starts a local instance (`num_cpus`) — the
    latter only once there is work: a rerun with everything done never starts Ray."""
    import ray

    from evals.registry import get_benchmark

    from .replica import check_replica_options

    check_replica_options(cfg.expert_shards)
    out = Path(cfg.out)
    pred = out / "predictions"
    started_at, t_start = _utc(), time.monotonic()
    with RunLock(out):
        pred.mkdir(parents=True, exist_ok=True)
        model_path = cfg.model_path()
        benches = {s.name: get_benchmark(s.name) for s in cfg.benchmarks}
        lazy_ray = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
        started_ray = False if lazy_ray else ensure_ray()
        plan = plan_resources(cfg, local_resources(num_cpus) if lazy_ray else ray.cluster_resources())
        dtype = resolved_dtype(cfg, plan)
        common = common_parts(cfg, model_path, dtype)
        parts = {n: benchmark_fingerprint_parts(common, n, b) for n, b in benches.items()}
        fps = {n: fingerprint_of(p) for n, p in parts.items()}

        old = _load_manifest(out)
        notes: list[str] = []
        for name, fp in fps.items():
            prev = old.get("benchmarks", {}).get(name)
            if prev and prev.get("fingerprint") != fp:
                why = diff_parts(prev.get("fingerprint_parts", {}), parts[name])
                notes.append(f"{name}: fingerprint changed ({'; '.join(why[:6]) or 'unknown fields'})")
                _archive_manifest_entry(out, name, prev)
            notes += archive_other_fingerprints(out, name, fp)
        removed_tmp = remove_stale_tmp(pred)
        if removed_tmp:
            notes.append(f"removed {removed_tmp} temporary file(s) left by an interrupted run")
        for name, fp in fps.items():
            dup = reconcile(pred, name, fp)
            if dup:
                notes.append(f"{name}: removed {dup} duplicate row(s) found at start")

        # ---- read samples, skip what is done, push the rest into the object store in blocks
        progress = {n: BenchmarkProgress(n) for n in fps}
        refs, todo_keys, pending_rows = [], {n: set() for n in fps}, []

        def put(rows: list[dict]) -> None:
            nonlocal started_ray
            if not ray.is_initialized():
                started_ray = ensure_ray(num_cpus)
            refs.append(ray.put(input_table(rows)))

        duplicates: dict[str, int] = {}
        for spec in cfg.benchmarks:
            done = scan_done(pred, spec.name, fps[spec.name])
            prog, seen = progress[spec.name], set()
            for sample in benches[spec.name].load(spec.data, spec.limit):
                key = sample_key(sample.split, sample.sample_id)
                if key in seen:
                    duplicates[spec.name] = duplicates.get(spec.name, 0) + 1
                    continue
                seen.add(key)
                prog.total += 1
                if key in done.keys:
                    prog.skipped += 1
                    prog.skipped_failed += key in done.failed
                    continue
                todo_keys[spec.name].add(key)
                pending_rows.append(input_row(sample))
                if len(pending_rows) >= cfg.batch_size * cfg.pack_batches:
                    put(pending_rows)
                    pending_rows = []
        if pending_rows:
            put(pending_rows)
        for name, n in duplicates.items():
            notes.append(f"{name}: the reader yielded {n} duplicate sample id(s); each sample is evaluated once")

        manifest = _manifest_start(old, cfg, plan, dtype, parts, fps, started_at, notes)
        _write_manifest(out, manifest)

        printer = ProgressPrinter(list(progress.values()), enabled=cfg.progress, stream=stream)
        for p in progress.values():
            p.started = time.monotonic()
        if refs:
            _configure_ray_data(verbose)
            if lazy_ray:  # sizes from what Ray actually sees (the fingerprint's device/dtype were planned the same way)
                real = plan_resources(cfg, ray.cluster_resources())
                if real.device != plan.device:
                    raise RuntimeError(f"Ray sees device {real.device!r} but {plan.device!r} was planned; pass --dtype")
                plan = real
            ds = build_dataset(refs, cfg, plan, model_path, fps, dtype)
            printer.update(force=True)
            trace("driver", "execute", n=sum(len(k) for k in todo_keys.values()))
            # prefetch_batches=0: with prefetching the iterator held each finished block until the next one arrived,
            # so rows were committed (and made resumable) one model batch late
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
                _commit(block, pred, fps, progress, todo_keys)
                trace("driver", "commit", n=block.num_rows)
                printer.update()
        for p in progress.values():
            p.finished = time.monotonic()
        printer.close()

        for name, fp in fps.items():
            dup = reconcile(pred, name, fp)
            if dup:
                notes.append(f"{name}: removed {dup} duplicate row(s) at the end")
        metrics = compute_metrics(out)
        atomic_write_table(out / "metrics.parquet", metrics_table(metrics))
        manifest = _manifest_end(manifest, out, fps, progress, notes, t_start)
        _write_manifest(out, manifest)
    return RunResult(out=out, manifest=manifest, metrics=metrics, notes=notes, started_ray=started_ray)


def _commit(block: pa.Table, pred: Path, fps: dict[str, str], progress: dict[str, BenchmarkProgress],
            todo_keys: dict[str, set]) -> None:
    """Write one output block as one part file per benchmark and count it."""
    names = block.column("benchmark").to_pylist()
    for name in sorted(set(names)):
        idx = [i for i, n in enumerate(names) if n == name]
        sub = block.take(pa.array(idx, type=pa.int64())) if len(idx) != block.num_rows else block
        keys = [sample_key(s, i) for s, i in zip(sub.column("split").to_pylist(), sub.column("sample_id").to_pylist())]
        stray = [k for k in keys if k not in todo_keys[name]]
        if stray:  # cannot happen unless Ray delivered a block twice; never write a sample twice
            log.warning("%s: dropping %d row(s) already written in this run", name, len(stray))
            keep = [j for j, k in enumerate(keys) if k in todo_keys[name]]
            if not keep:
                continue
            sub = sub.take(pa.array(keep, type=pa.int64()))
            keys = [keys[j] for j in keep]
        write_part(pred, name, fps[name], sub)
        todo_keys[name].difference_update(keys)
        errors = [error_reason(e) for e in sub.column("error").to_pylist() if e is not None]
        pt = sum(x or 0 for x in sub.column("prompt_tokens").to_pylist())
        gt = sum(x or 0 for x in sub.column("generated_tokens").to_pylist())
        progress[name].add(len(keys), errors, pt, gt)


def _archive_manifest_entry(out: Path, name: str, entry: dict) -> None:
    fp = str(entry.get("fingerprint", ""))[:12]
    if not fp:
        return
    d = out / "runs" / f"{name}-{fp}"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / "manifest.json", (json.dumps(entry, indent=2, default=str) + "\n").encode())


def _manifest_start(old: dict, cfg: EvalConfig, plan: ResourcePlan, dtype: str, parts: dict, fps: dict,
                    started_at: str, notes: list[str]) -> dict:
    m = {
        "format": MANIFEST_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "benchmarks": dict(old.get("benchmarks", {})),
        "history": list(old.get("history", [])),
    }
    for name, fp in fps.items():
        prev = m["benchmarks"].get(name) or {}
        m["benchmarks"][name] = {
            "name": name,
            "fingerprint": fp,
            "fingerprint_parts": parts[name],
            "status": "running",
            "data": next(s.data for s in cfg.benchmarks if s.name == name),
            "limit": next(s.limit for s in cfg.benchmarks if s.name == name),
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


def _manifest_end(m: dict, out: Path, fps: dict, progress: dict[str, BenchmarkProgress], notes: list[str],
                  t_start: float) -> dict:
    pred = out / "predictions"
    for name, fp in fps.items():
        done = scan_done(pred, name, fp)
        prog = progress[name]
        rows = _read_rows(list_parts(pred, name, fp))
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
        )
        if prog.written or "progress" not in entry:  # throughput of the last invocation that did work
            entry["progress"] = prog.summary()
        entry["status"] = "complete" if entry["missing"] == 0 else "incomplete"
    lr = m["last_run"]
    lr.update(finished_at=_utc(), elapsed_s=round(time.monotonic() - t_start, 3), notes=notes)
    lr["status"] = "complete" if all(m["benchmarks"][n]["status"] == "complete" for n in fps) else "incomplete"
    m["history"].append({k: lr[k] for k in ("started_at", "finished_at", "status", "benchmarks", "elapsed_s")}
                        | {"written": {n: progress[n].written for n in fps},
                           "skipped": {n: progress[n].skipped for n in fps}})
    return m
