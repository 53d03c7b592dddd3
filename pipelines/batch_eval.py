"""The batch evaluation job: benchmark files + checkpoint → Parquet predictions, metrics and a manifest.

    driver: evals readers ─► resume filter ─► input blocks (object store)
    Ray Data (streaming):  PreprocessStage (CPU actors) ─► ReplicaStage (model actors) ─► ScoreStage (CPU actor)
    driver: iter_batches ─► atomic part files + live progress ─► reconcile ─► metrics.parquet + manifest.json

The driver is the only writer (resume.py explains the exactly-once rules). It reads the samples itself because it
must know which are already done (resume) and how many there are (progress/ETA); media bytes go straight into the
object store in blocks of `batch_size` rows, so the driver never holds a whole dataset.

`run_eval(cfg)` is the library entry point; the CLI (`ernie-vl eval`) and the benchmark harness call it. Under the
output folder's lock it runs five stages, each a function whose inputs and outputs are named:

    plan_run      cfg → RunPlan        checkpoint, benchmarks, fingerprints, dtype, resources, the Ray connection
    scan_run      RunPlan → Todo       the folder made consistent (archive, tmp files, duplicates), samples read,
                                       those already written skipped, the rest put into the object store
    execute_run   RunPlan, Todo → output blocks, as the Ray Data plan finishes them
    commit_block  one output block → part files (one per benchmark), counted in Todo.progress
    finalize_run  RunPlan, Todo, manifest → RunResult: reconcile, metrics.parquet (evals.scoring), manifest.json

A lost actor or node ends the Ray Data execution (the plan is dataflow.py; its actors are not restarted:
`dataflow.POOL_ACTOR_OPTIONS`); `requeue` then puts the samples not written yet into new input blocks and
`execute_run` runs again, at most `max_pipeline_restarts` times (cluster_failure.py says what ends a run instead).
"""

from __future__ import annotations

import hashlib

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from evals.judge import Judge
from evals.storage import Storage
from evals.scoring import compute_metrics, score_saved, scoring_record, write_metrics

from replicas.session import ensure_ray

from .cluster_failure import is_lost_worker, wait_for_a_cpu
from .config import EvalConfig, ResourcePlan, plan_resources
from .dataflow import build_dataset, configure_ray_data
from .fingerprint import benchmark_fingerprint_parts, common_parts, diff_parts, fingerprint_of
from .manifest import archive_entry, end_manifest, load_manifest, start_manifest, utc_now, write_manifest
from .progress import BenchmarkProgress, ProgressPrinter, error_reason
from .resume import (RunLock, archive_other_fingerprints, reconcile, remove_stale_tmp, sample_key, scan_done,
                     write_part)
from .stages import input_row, input_table
from .trace import trace

log = logging.getLogger("pipelines")


@dataclass
class RunResult:
    """What `run_eval` did: per-benchmark summaries (as in the manifest), paths and notes."""

    out: Storage  # the output folder (str(): its path or URI)
    manifest: dict
    metrics: list[dict]
    notes: list[str] = field(default_factory=list)
    started_ray: bool = False  # run_eval started a local Ray instance (the caller may shut it down)

    @property
    def complete(self) -> bool:
        return all(b["missing"] == 0 for b in self.manifest["benchmarks"].values()
                   if b["name"] in self.manifest["last_run"]["benchmarks"])


# ------------------------------------------------------------------------------------------------ Ray


def local_resources(num_cpus: int | None) -> dict:
    """What a local Ray instance started by `ensure_ray(num_cpus)` will report (used to plan before starting it)."""
    import torch

    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


@dataclass
class RayConnection:
    """Ray for one run. A running session or the cluster named by RAY_ADDRESS is joined at once; otherwise a local
    instance (`num_cpus`) is started by the first `put`, so a rerun with everything done never starts Ray."""

    num_cpus: int | None
    lazy: bool  # no Ray yet: plan from `local_resources`, start on the first `put`
    started: bool = False  # this run started Ray (the caller may shut it down)

    @classmethod
    def open(cls, num_cpus: int | None) -> "RayConnection":
        from ernie_vl.worker_env import default_ray_auth

        default_ray_auth()  # before Ray is imported, in case this run starts the local instance
        import ray

        lazy = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
        return cls(num_cpus=num_cpus, lazy=lazy, started=False if lazy else ensure_ray())

    def resources(self) -> dict:
        """The resources to plan with: the cluster's, or those the local instance will have."""
        import ray

        return local_resources(self.num_cpus) if self.lazy else ray.cluster_resources()

    def put(self, table: pa.Table):
        """`ray.put(table)`, starting the local instance first if there is none yet."""
        import ray

        if not ray.is_initialized():
            self.started = ensure_ray(self.num_cpus)
        return ray.put(table)


# ------------------------------------------------------------------------------------------------ checks


def resolved_dtype(cfg: EvalConfig, plan: ResourcePlan) -> str:
    """The dtype the replicas run in (fingerprinted): as asked, else bfloat16 on GPUs, else the checkpoint's own
    ("auto": the checkpoint identity covers it)."""
    from ernie_vl.weights import default_dtype

    return default_dtype(cfg.dtype, plan.device) or "auto"


def check_inputs(cfg: EvalConfig) -> None:
    """Cheap checks before any cluster work: replica options, benchmark names, data paths and layouts
    (`load(..., limit=0)` detects the layout and raises `DatasetError` for a bad path), the checkpoint folder and its
    `</think>` token when answer tokens are capped; a `--split` that names no sample."""
    from evals.errors import DatasetError
    from evals.registry import get_benchmark

    from .replica import answer_cap, check_replica_options

    check_replica_options(cfg.expert_shards)
    for spec in cfg.benchmarks:
        samples = get_benchmark(spec.name).load(spec.data, None if spec.split else 0, split=spec.split)
        if spec.split and next(iter(samples), None) is None:
            raise DatasetError(spec.data, f"{spec.name}: no sample of split {spec.split!r} there")
    answer_cap(str(cfg.model_path()), cfg.max_answer_tokens)  # </think> must be one token to count answer tokens


# ------------------------------------------------------------------------------------------------ stages


@dataclass
class RunPlan:
    """Stage 1 (`plan_run`): what this run is. Nothing in the output folder is touched yet."""

    cfg: EvalConfig
    out: Storage  # the output folder: local, or any file system evals.storage reaches
    model_path: Path
    benchmarks: dict[str, Any]  # name -> evals Benchmark
    ray: RayConnection
    resources: ResourcePlan  # planned before Ray starts when it starts lazily (execute_run checks it)
    dtype: str
    parts: dict[str, dict]  # name -> fingerprint parts
    fingerprints: dict[str, str]  # name -> fingerprint
    started_at: str
    t_start: float  # time.monotonic() at the start

    @property
    def pred(self) -> Storage:
        return self.out.child("predictions")


@dataclass
class Todo:
    """Stage 2 (`scan_run`): what is left to do, and the counters that execution and commits update."""

    old_manifest: dict  # the manifest of the previous run ({} if none)
    notes: list[str]  # for the summary and the manifest; later stages append
    progress: dict[str, BenchmarkProgress]  # total/skipped set by the scan, written/failed by commits
    pending: dict[str, set[str]]  # name -> sample keys sent to the pipeline and not committed yet
    refs: list  # ObjectRefs of the input blocks (input_table), in order

    def start_clocks(self) -> None:
        for p in self.progress.values():
            p.started = time.monotonic()

    def stop_clocks(self) -> None:
        for p in self.progress.values():
            p.finished = time.monotonic()


def plan_run(cfg: EvalConfig, num_cpus: int | None, started_at: str, t_start: float) -> RunPlan:
    """Resolve the checkpoint and benchmarks, join Ray (or plan for a local instance started later), size the stages,
    and fingerprint every benchmark."""
    from evals.registry import get_benchmark

    model_path = cfg.model_path()
    benchmarks = {s.name: get_benchmark(s.name) for s in cfg.benchmarks}
    ray = RayConnection.open(num_cpus)
    resources = plan_resources(cfg, ray.resources())
    dtype = resolved_dtype(cfg, resources)
    common = common_parts(cfg, model_path, dtype)
    parts = {s.name: benchmark_fingerprint_parts(common, s.name, benchmarks[s.name],
                                                 cfg.thinking_record(benchmarks[s.name]), split=s.split)
             for s in cfg.benchmarks}
    return RunPlan(cfg=cfg, out=Storage.at(cfg.out), model_path=model_path, benchmarks=benchmarks, ray=ray,
                   resources=resources, dtype=dtype, parts=parts,
                   fingerprints={n: fingerprint_of(p) for n, p in parts.items()}, started_at=started_at,
                   t_start=t_start)


def _tidy_outputs(run: RunPlan, old: dict) -> list[str]:
    """Make the output folder hold exactly this run's fingerprints, complete part files and no duplicate row;
    returns a note per change."""
    notes: list[str] = []
    for name, fp in run.fingerprints.items():
        prev = old.get("benchmarks", {}).get(name)
        if prev and prev.get("fingerprint") != fp:
            why = diff_parts(prev.get("fingerprint_parts", {}), run.parts[name])
            notes.append(f"{name}: fingerprint changed ({'; '.join(why[:6]) or 'unknown fields'})")
            archive_entry(run.out, name, prev)
        notes += archive_other_fingerprints(run.out, name, fp)
    removed_tmp = remove_stale_tmp(run.pred)
    if removed_tmp:
        notes.append(f"removed {removed_tmp} temporary file(s) left by an interrupted run")
    for name, fp in run.fingerprints.items():
        dup = reconcile(run.pred, name, fp)
        if dup:
            notes.append(f"{name}: removed {dup} duplicate row(s) found at start")
    return notes


def by_media(rows: list[dict]) -> list[dict]:
    """Input rows regrouped so that samples sharing their first image or video (same bytes, or same path) follow each
    other, groups in order of first appearance, rows in order within a group: a pack then carries, for example, all
    the rotated copies of an MMBench question, which the replica prefills once up to the options (media identity for
    reuse is the processed pixels' hash on the model side; this is only the schedule)."""
    groups: dict = {}
    for i, r in enumerate(rows):
        media = r.get("media") or []
        first = media[0] if media else None
        key = ("row", i) if first is None else (
            ("path", first["path"]) if first.get("path") else ("data", hashlib.blake2b(first["data"], digest_size=16).digest()))
        groups.setdefault(key, []).append(r)
    return [r for g in groups.values() for r in g]


def scan_run(run: RunPlan) -> Todo:
    """Tidy the output folder, read every benchmark's samples, skip those already written with this fingerprint and
    put the rest into the object store in blocks of `batch_size * pack_batches` rows."""
    cfg = run.cfg
    run.pred.make_dir()
    old = load_manifest(run.out)
    notes = _tidy_outputs(run, old)
    progress = {n: BenchmarkProgress(n) for n in run.fingerprints}
    pending: dict[str, set[str]] = {n: set() for n in run.fingerprints}
    refs, duplicates = [], {}
    for spec in cfg.benchmarks:
        rows = []
        done = scan_done(run.pred, spec.name, run.fingerprints[spec.name])
        prog = progress[spec.name]
        for key, sample in _samples(run, spec, duplicates):
            prog.total += 1
            if key in done.keys:
                prog.skipped += 1
                prog.skipped_failed += key in done.failed
                continue
            pending[spec.name].add(key)
            rows.append(input_row(sample))
        refs += _input_blocks(run, rows)
    for name, n in duplicates.items():
        notes.append(f"{name}: the reader yielded {n} duplicate sample id(s); each sample is evaluated once")
    return Todo(old_manifest=old, notes=notes, progress=progress, pending=pending, refs=refs)


def requeue(run: RunPlan, todo: Todo) -> int:
    """After a lost actor or node: the input blocks of the samples sent and not written yet (`todo.pending`), read
    again as `scan_run` read them, replace `todo.refs`. Returns how many samples are left."""
    refs = []
    for spec in run.cfg.benchmarks:
        wanted = todo.pending[spec.name]
        refs += _input_blocks(run, [input_row(s) for key, s in _samples(run, spec, {}) if key in wanted])
    todo.refs = refs
    return sum(len(k) for k in todo.pending.values())


def _samples(run: RunPlan, spec, duplicates: dict[str, int]) -> Iterator[tuple[str, Any]]:
    """(sample key, sample) of one benchmark as its reader yields them, each key once: a repeated id keeps its first
    sample and is counted in `duplicates[spec.name]`."""
    seen: set[str] = set()
    for sample in run.benchmarks[spec.name].load(spec.data, spec.limit, split=spec.split):
        key = sample_key(sample.split, sample.sample_id)
        if key in seen:
            duplicates[spec.name] = duplicates.get(spec.name, 0) + 1
            continue
        seen.add(key)
        yield key, sample


def _input_blocks(run: RunPlan, rows: list[dict]) -> list:
    """Rows into the object store in blocks of `batch_size * pack_batches`, samples sharing media side by side when
    reuse is on (`by_media`: same block, pack and replica call)."""
    block = run.cfg.batch_size * run.cfg.pack_batches
    if run.cfg.reuse:
        rows = by_media(rows)
    return [run.ray.put(input_table(rows[i: i + block])) for i in range(0, len(rows), block)]


def execute_run(run: RunPlan, todo: Todo, printer: ProgressPrinter, verbose: bool = False) -> Iterator[pa.Table]:
    """Run the Ray Data plan over `todo.refs`; yields each scored output block (prediction rows) as it finishes,
    for `commit_block`. Nothing to do: yields nothing and never touches Ray."""
    if not todo.refs:
        return
    import ray

    configure_ray_data(verbose)
    resources = run.resources
    if run.ray.lazy:  # sizes from what Ray actually sees (the fingerprint's device/dtype were planned the same way)
        real = plan_resources(run.cfg, ray.cluster_resources())
        if real.device != resources.device:
            raise RuntimeError(f"Ray sees device {real.device!r} but {resources.device!r} was planned; pass --dtype")
        resources = real
    ds = build_dataset(todo.refs, run.cfg, resources, run.model_path, run.fingerprints, run.dtype)
    printer.update(force=True)
    trace("driver", "execute", n=sum(len(k) for k in todo.pending.values()))
    # prefetch_batches=0: with prefetching the iterator held each finished block until the next one arrived,
    # so rows were committed (and made resumable) one model batch late
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)


def commit_block(block: pa.Table, run: RunPlan, todo: Todo) -> int:
    """Write one output block as one part file per benchmark, count it in `todo.progress` and drop its keys from
    `todo.pending`; returns the rows written."""
    written = 0
    names = block.column("benchmark").to_pylist()
    for name in sorted(set(names)):
        idx = [i for i, n in enumerate(names) if n == name]
        sub = block.take(pa.array(idx, type=pa.int64())) if len(idx) != block.num_rows else block
        keys = [sample_key(s, i) for s, i in zip(sub.column("split").to_pylist(), sub.column("sample_id").to_pylist())]
        pending = todo.pending[name]
        stray = [k for k in keys if k not in pending]
        if stray:  # cannot happen unless Ray delivered a block twice; never write a sample twice
            log.warning("%s: dropping %d row(s) already written in this run", name, len(stray))
            keep = [j for j, k in enumerate(keys) if k in pending]
            if not keep:
                continue
            sub = sub.take(pa.array(keep, type=pa.int64()))
            keys = [keys[j] for j in keep]
        write_part(run.pred, name, run.fingerprints[name], sub)
        pending.difference_update(keys)
        errors = [error_reason(e) for e in sub.column("error").to_pylist() if e is not None]
        pt = sum(x or 0 for x in sub.column("prompt_tokens").to_pylist())
        gt = sum(x or 0 for x in sub.column("generated_tokens").to_pylist())
        rt = sum(x or 0 for x in sub.column("reused_prompt_tokens").to_pylist())
        todo.progress[name].add(len(keys), errors, pt, gt, rt)
        written += len(keys)
    return written


def finalize_run(run: RunPlan, todo: Todo, manifest: dict) -> RunResult:
    """Remove any duplicate row, score the judge-scored benchmarks (with `cfg.judge`, or by their rule; replies from
    the folder's judge cache when it has them), write metrics.parquet (evals.scoring, from the saved predictions) and
    the final manifest, which says per benchmark how it was scored."""
    for name, fp in run.fingerprints.items():
        dup = reconcile(run.pred, name, fp)
        if dup:
            todo.notes.append(f"{name}: removed {dup} duplicate row(s) at the end")
    judge = Judge(run.cfg.judge, run.out) if run.cfg.judge is not None else None
    score_saved(run.out, run.fingerprints, judge)
    scoring = {name: scoring_record(name, judge) for name in run.fingerprints}
    for name, record in scoring.items():
        if record.get("failed"):
            todo.notes.append(f"{name}: the judge did not answer {record['failed']} prompt(s) ({record.get('error')}); "
                              "those rows are scored by rule until `ernie-vl score` asks again")
    metrics = compute_metrics(run.out)
    write_metrics(run.out, metrics)
    manifest = end_manifest(manifest, run.out, run.fingerprints, todo.progress, todo.notes, run.t_start)
    for name, record in scoring.items():
        manifest["benchmarks"][name]["scoring"] = record
    write_manifest(run.out, manifest)
    return RunResult(out=run.out, manifest=manifest, metrics=metrics, notes=todo.notes, started_ray=run.ray.started)


def run_eval(cfg: EvalConfig, *, stream=None, verbose: bool = False, num_cpus: int | None = None) -> RunResult:
    """Run (or resume) one evaluation; see the module docstring. Raises on dataset/config errors.

    Uses the running Ray session, or the cluster named by RAY_ADDRESS, or starts a local instance (`num_cpus`) — the
    latter only once there is work: a rerun with everything done never starts Ray."""
    from .replica import check_replica_options

    check_replica_options(cfg.expert_shards)
    started_at, t_start = utc_now(), time.monotonic()
    with RunLock(cfg.out) as lock:
        run = plan_run(cfg, num_cpus, started_at, t_start)
        todo = scan_run(run)
        manifest = start_manifest(todo.old_manifest, cfg, run.resources, run.dtype, run.parts, run.fingerprints,
                                  started_at, todo.notes)
        write_manifest(run.out, manifest)
        printer = ProgressPrinter(list(todo.progress.values()), enabled=cfg.progress, stream=stream)
        todo.start_clocks()
        restarts = 0
        while True:
            try:
                for block in execute_run(run, todo, printer, verbose):
                    lock.check()  # an object-store lease lost to another driver: stop before writing (run_lock.py)
                    commit_block(block, run, todo)
                    trace("driver", "commit", n=block.num_rows)
                    printer.update()
                break
            except Exception as e:
                if not is_lost_worker(e) or restarts >= cfg.max_pipeline_restarts:
                    raise
                restarts += 1
                left = requeue(run, todo)
                note = (f"pipeline restarted ({restarts} of at most {cfg.max_pipeline_restarts}) after a lost actor "
                        f"or node ({type(e).__name__}): {left} sample(s) still to do")
                todo.notes.append(note)
                print(f"ernie-vl eval: {note}", file=sys.stderr, flush=True)
                wait_for_a_cpu()  # else building the pipeline could wait forever, before Ray Data's own timeout
        todo.stop_clocks()
        printer.close()
        return finalize_run(run, todo, manifest)
