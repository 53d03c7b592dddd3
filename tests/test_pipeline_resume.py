"""Exactly-once building blocks of the pipeline (no Ray): part files, resume scan, reconciliation, run folders,
locking, resource planning, the Parquet schema and progress lines. Real files, real Parquet."""

from __future__ import annotations

import io
import json
import multiprocessing as mp

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.config import BenchmarkSpec, EvalConfig, plan_resources
from pipelines.progress import BenchmarkProgress, ProgressPrinter, error_reason
from pipelines.resume import (RunLock, archive_other_fingerprints, list_parts, part_name, reconcile, remove_stale_tmp,
                              scan_done, write_part)
from pipelines.schema import PREDICTION_NAMES, PREDICTIONS_SCHEMA, predictions_table, schema_markdown

FP = "a" * 32
FP2 = "b" * 32


def rows(ids, benchmark="demo", error_ids=(), fp=FP):
    return [
        {"sample_id": str(i), "benchmark": benchmark, "split": "test", "question": f"q{i}", "options": "{}",
         "targets": '["A"]', "meta": "{}", "prediction": "A", "extracted": "A", "score": 1.0,
         "error": "media: broken" if i in error_ids else None, "frame_indices": [0, 4] if i == 0 else None,
         "fingerprint": fp, "prompt_tokens": 10, "generated_tokens": 2}
        for i in ids
    ]


def keys_of(pred, benchmark="demo", fp=FP):
    out = []
    for name in list_parts(pred, benchmark, fp):
        out += pq.read_table(pred / name, columns=["sample_id"]).column("sample_id").to_pylist()
    return sorted(out, key=int)


def test_part_names_are_a_function_of_the_sample_set(tmp_path):
    a = write_part(tmp_path, "demo", FP, predictions_table(rows([3, 1, 2])))
    b = write_part(tmp_path, "demo", FP, predictions_table(rows([2, 3, 1])))  # a retried batch, other order
    assert a == b and len(list_parts(tmp_path)) == 1
    assert a == part_name("demo", FP, ["test\x1f1", "test\x1f2", "test\x1f3"])
    assert pq.read_table(tmp_path / a).column("sample_id").to_pylist() == ["1", "2", "3"]  # sorted by key inside
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_write_part_refuses_duplicates_and_empty(tmp_path):
    with pytest.raises(ValueError, match="twice"):
        write_part(tmp_path, "demo", FP, predictions_table(rows([1, 1])))
    with pytest.raises(ValueError, match="empty"):
        write_part(tmp_path, "demo", FP, predictions_table([]))
    with pytest.raises(ValueError, match="may only contain"):
        part_name("bad-name", FP, ["x"])


def test_scan_done_only_counts_complete_parts_of_the_fingerprint(tmp_path):
    write_part(tmp_path, "demo", FP, predictions_table(rows([1, 2], error_ids={2})))
    write_part(tmp_path, "demo", FP2, predictions_table(rows([3], fp=FP2)))
    write_part(tmp_path, "pope", FP, predictions_table(rows([4], benchmark="pope")))
    (tmp_path / ".tmp-part-demo-aaaaaaaaaaaa-0123456789abcdef.parquet-1234").write_bytes(b"PAR1 partial")
    done = scan_done(tmp_path, "demo", FP)
    assert done.keys == {"test\x1f1", "test\x1f2"} and done.failed == {"test\x1f2"} and done.parts == 1
    assert remove_stale_tmp(tmp_path) == 1


def test_reconcile_removes_duplicates_without_losing_rows(tmp_path):
    # A = {1,2}, B = {2,3}, C = {3}: B's repair produces exactly C's key set (a name collision) and C must survive.
    write_part(tmp_path, "demo", FP, predictions_table(rows([1, 2])))
    write_part(tmp_path, "demo", FP, predictions_table(rows([2, 3])))
    write_part(tmp_path, "demo", FP, predictions_table(rows([3])))
    write_part(tmp_path, "demo", FP, predictions_table(rows([1, 2, 3, 4])))
    removed = reconcile(tmp_path, "demo", FP)
    assert removed >= 4
    assert keys_of(tmp_path) == ["1", "2", "3", "4"]
    assert reconcile(tmp_path, "demo", FP) == 0


def test_archive_and_restore_by_fingerprint(tmp_path):
    pred = tmp_path / "predictions"
    pred.mkdir()
    write_part(pred, "demo", FP, predictions_table(rows([1, 2])))
    write_part(pred, "pope", FP, predictions_table(rows([1], benchmark="pope")))
    notes = archive_other_fingerprints(tmp_path, "demo", FP2)  # settings changed: FP's demo rows move aside
    assert any("moved" in n for n in notes)
    assert list_parts(pred, "demo") == [] and len(list_parts(pred, "pope")) == 1  # other benchmarks untouched
    assert keys_of(tmp_path / "runs" / f"demo-{FP[:12]}" / "predictions") == ["1", "2"]
    write_part(pred, "demo", FP2, predictions_table(rows([7], fp=FP2)))
    notes = archive_other_fingerprints(tmp_path, "demo", FP)  # back to the first settings: restored, not redone
    assert any("restored" in n for n in notes)
    assert keys_of(pred) == ["1", "2"]
    assert keys_of(tmp_path / "runs" / f"demo-{FP2[:12]}" / "predictions", fp=FP2) == ["7"]


def _try_lock(path, q):
    try:
        with RunLock(path):
            q.put("locked")
    except RuntimeError as e:
        q.put(str(e))


@pytest.mark.subprocess
def test_run_lock_is_exclusive_across_processes(tmp_path):
    with RunLock(tmp_path):
        q = mp.get_context("fork").Queue()
        p = mp.get_context("fork").Process(target=_try_lock, args=(tmp_path, q))
        p.start()
        p.join(30)
        assert "another ernie-vl run" in q.get(timeout=5)
    with RunLock(tmp_path):  # released on exit
        pass


def test_resource_plan_fits_two_cpus_and_scales():
    cfg = EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="/tmp/x")
    plan = plan_resources(cfg, {"CPU": 2.0})
    minimum = plan.preprocess.num_cpus + plan.replica.num_cpus + plan.score.num_cpus
    assert minimum <= 2.0 and plan.device == "cpu"
    assert all(0 < s.num_cpus < 2 for s in (plan.preprocess, plan.replica, plan.score))
    two = plan_resources(EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="/tmp/x", replicas=2), {"CPU": 2.0})
    assert two.preprocess.num_cpus + 2 * two.replica.num_cpus + two.score.num_cpus <= 2.0
    gpu = plan_resources(EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="/tmp/x", replicas=4),
                         {"CPU": 64.0, "GPU": 8.0})
    assert gpu.device == "cuda" and gpu.replica.num_gpus == 1 and gpu.replica.concurrency == 4
    assert gpu.preprocess.concurrency[1] > 8
    with pytest.raises(RuntimeError, match="GPUs"):
        plan_resources(EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="/tmp/x", replicas=9), {"CPU": 64, "GPU": 8})


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="flavor 'nope'"):
        EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="/tmp/x", flavor="nope")
    with pytest.raises(ValueError, match="replicas must be >= 1, got 0"):
        EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="/tmp/x", replicas=0)
    with pytest.raises(ValueError, match="named twice"):
        EvalConfig(benchmarks=[BenchmarkSpec("demo"), BenchmarkSpec("demo")], out="/tmp/x")


def test_schema_reads_back_with_pandas_and_is_documented(tmp_path):
    write_part(tmp_path, "demo", FP, predictions_table(rows([0, 1])))
    df = pd.read_parquet(tmp_path)
    assert list(df.columns) == PREDICTION_NAMES
    assert list(df.sort_values("sample_id")["frame_indices"].iloc[0]) == [0, 4]
    assert pq.read_schema(next(tmp_path.glob("part-*.parquet"))).remove_metadata().equals(
        PREDICTIONS_SCHEMA.remove_metadata())
    table = schema_markdown()
    assert all(f"`{n}`" in table for n in PREDICTION_NAMES)


def test_progress_line_and_summary():
    p = BenchmarkProgress("demo", total=10, skipped=2)
    p.add(3, ["media"], prompt_tokens=300, generated_tokens=60)
    line = p.line()
    assert line.startswith("[demo] 5/10 (50%)") and "failed 1" in line and "ETA" in line and "resumed: 2" in line
    s = p.summary()
    assert s["written"] == 3 and s["errors_this_run"] == {"media": 1}
    buf = io.StringIO()
    pr = ProgressPrinter([p], stream=buf, interval=0)
    pr.update()
    pr.close()
    assert buf.getvalue().count("[demo]") == 2
    assert error_reason("prompt_too_long: 9000 > 8192") == "prompt_too_long"
    p.add(2, [], prompt_tokens=100, generated_tokens=10, reused_prompt_tokens=200)
    assert "reused 50% of prompt tokens" in p.line() and p.summary()["reused_prompt_tokens"] == 200
    assert json.dumps(s)  # manifest-ready


def test_readme_documents_the_current_schema():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert schema_markdown() in readme


def test_worker_env_puts_this_checkout_first_and_forwards_the_home(monkeypatch, tmp_path):
    from pathlib import Path

    from ernie_vl.worker_env import worker_env

    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("ERNIE_VL_HOME", str(tmp_path))
    assert worker_env() == {"PYTHONPATH": f"{root}:/elsewhere", "ERNIE_VL_HOME": str(tmp_path)}
    monkeypatch.delenv("PYTHONPATH")
    monkeypatch.delenv("ERNIE_VL_HOME")
    assert worker_env() == {"PYTHONPATH": root}


def test_stages_of_a_run_with_everything_written(tmp_path):
    """plan → scan → execute → finalize without Ray: every sample already written (one of them twice, in two part
    files, as a crash between write and reconcile leaves it) — the scan reconciles and skips all, execution yields
    nothing and never starts Ray, and the metrics equal `ernie-vl score`'s for the same predictions."""
    import shutil
    import time

    import ray

    from evals.registry import get_benchmark
    from evals.scoring import rescore
    from pipelines.batch_eval import execute_run, finalize_run, plan_run, scan_run
    from pipelines.manifest import start_manifest

    assert not ray.is_initialized()
    cfg = EvalConfig(benchmarks=[BenchmarkSpec("demo", limit=4)], out=str(tmp_path / "out"), progress=False)
    run = plan_run(cfg, 1, "2024-01-01T00:00:00+00:00", time.monotonic())
    assert run.ray.lazy and not run.ray.started and run.dtype == "auto"
    fp = run.fingerprints["demo"]
    bench = get_benchmark("demo")
    saved = []
    for s in list(bench.load(None))[:4]:
        r = dict(s.to_record(), prediction="A", flavor="official", fingerprint=fp)
        r["extracted"], r["score"] = bench.score(r, "A", "official")
        saved.append(r)
    write_part(run.pred, "demo", fp, predictions_table(saved[:3]))
    write_part(run.pred, "demo", fp, predictions_table(saved[2:]))  # saved[2] twice

    todo = scan_run(run)
    assert todo.refs == [] and todo.pending == {"demo": set()}
    assert (todo.progress["demo"].total, todo.progress["demo"].skipped) == (4, 4)
    assert todo.notes == ["demo: removed 1 duplicate row(s) found at start"]
    printer = ProgressPrinter(list(todo.progress.values()), enabled=False)
    assert list(execute_run(run, todo, printer)) == [] and not ray.is_initialized()
    manifest = start_manifest(todo.old_manifest, cfg, run.resources, run.dtype, run.parts, run.fingerprints,
                              run.started_at, todo.notes)
    res = finalize_run(run, todo, manifest)
    b = res.manifest["benchmarks"]["demo"]
    assert (b["rows"], b["skipped"], b["written"], b["missing"], b["status"]) == (4, 4, 0, 0, "complete")
    assert not res.started_ray and res.complete
    shutil.copytree(run.out.local_path, tmp_path / "rescored")
    assert rescore(tmp_path / "rescored", "official") == res.metrics
    assert pq.read_table(run.out.local_path / "metrics.parquet").equals(pq.read_table(tmp_path / "rescored" / "metrics.parquet"))


def test_input_rows_are_grouped_by_their_first_medium():
    from pipelines.batch_eval import by_media

    rows = [{"sample_id": "1", "media": [{"kind": "image", "data": b"red", "path": None}]},
            {"sample_id": "2", "media": []},
            {"sample_id": "3", "media": [{"kind": "video", "data": None, "path": "/v/a.mp4"}]},
            {"sample_id": "1001", "media": [{"kind": "image", "data": b"red", "path": None}]},
            {"sample_id": "4", "media": []},
            {"sample_id": "3001", "media": [{"kind": "video", "data": None, "path": "/v/a.mp4"}]}]
    assert [r["sample_id"] for r in by_media(rows)] == ["1", "1001", "2", "3", "3001", "4"]


def test_a_block_delivered_again_or_overlapping_writes_no_sample_twice(tmp_path):
    """What a retried task can hand the driver after a lost actor or node (`commit_block`, no Ray): the same output
    block again, or a block overlapping one already committed. Each sample is written once, the first row kept."""
    import time

    from pipelines.batch_eval import Todo, commit_block, plan_run
    from pipelines.resume import sample_key

    cfg = EvalConfig(benchmarks=[BenchmarkSpec("demo", limit=4)], out=str(tmp_path / "out"), progress=False)
    run = plan_run(cfg, 1, "2024-01-01T00:00:00+00:00", time.monotonic())
    fp = run.fingerprints["demo"]
    (tmp_path / "out" / "predictions").mkdir(parents=True)
    keys = {sample_key("test", str(i)) for i in range(4)}
    todo = Todo(old_manifest={}, notes=[], progress={"demo": BenchmarkProgress("demo")}, pending={"demo": set(keys)},
                refs=[])

    def block(ids, prediction):
        return predictions_table([dict(r, prediction=prediction) for r in rows(ids, fp=fp)])

    assert commit_block(block([0, 1], "first"), run, todo) == 2
    assert commit_block(block([0, 1], "again"), run, todo) == 0  # the same block once more: nothing written
    assert commit_block(block([1, 2, 3], "later"), run, todo) == 2  # overlapping: only samples 2 and 3
    assert todo.pending == {"demo": set()} and todo.progress["demo"].written == 4
    df = pd.read_parquet(tmp_path / "out" / "predictions")
    assert sorted(df["sample_id"], key=int) == ["0", "1", "2", "3"]
    assert dict(zip(df["sample_id"], df["prediction"])) == {"0": "first", "1": "first", "2": "later", "3": "later"}
    assert len(list_parts(run.pred, "demo", fp)) == 2
