"""Run folders and benchmark data on object storage, against a real S3 server: moto in server mode, started here as a
subprocess on 127.0.0.1 (a free port), reached through the standard variables AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION, as every S3 client reads them. No in-process mock.

Covers: the storage layer's operations giving the same results on a local folder and on S3 (and its commit rule on
S3: no temporary objects), the exactly-once building blocks on S3, the object-store lease (a live holder refused, a
killed one taken over at once, a foreign stale one after its ttl, a lost lease stopping the holder), remote data
staged to a per-node cache, and end to end: `ernie-vl eval --data s3://… --out s3://…` killed mid-run (kill -9 of the
CLI) and rerun gives every sample exactly once; `ernie-vl score`, `report` and `compare` read the run from S3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from evals import data_cache
from evals.errors import DatasetError
from evals.registry import get_benchmark
from evals.scoring import read_predictions, rescore
from evals.storage import LOCAL, OBJECT, Storage
from pipelines.bench import write_synthetic_benchmark
from pipelines.config import BenchmarkSpec, EvalConfig
from pipelines.resume import archive_other_fingerprints, list_parts, reconcile, scan_done, write_part
from pipelines.run_lock import RunLock
from pipelines.schema import predictions_table
from serve_support import free_port

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "ernie-vl-test"
FP, FP2 = "a" * 32, "b" * 32
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on the loopback with one bucket; the AWS variables point at it while the module runs."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start (exit {proc.poll()})")
            time.sleep(0.1)
    old = {k: os.environ.get(k) for k in AWS_VARS}
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True).create_dir(BUCKET)
    yield url
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(10)
    log.close()


def rows(ids, benchmark="demo", fp=FP):
    return [{"sample_id": str(i), "benchmark": benchmark, "split": "test", "question": f"q{i}", "options": "{}",
             "targets": '["A"]', "meta": "{}", "prediction": "A", "extracted": "A", "score": 1.0, "error": None,
             "fingerprint": fp, "prompt_tokens": 10, "generated_tokens": 2} for i in ids]


def keys_of(pred: Storage, benchmark="demo", fp=FP) -> list[str]:
    out = []
    for name in list_parts(pred, benchmark, fp):
        out += pred.read_table(name, columns=["sample_id"]).column("sample_id").to_pylist()
    return sorted(out, key=int)


# ------------------------------------------------------------------------------------------------ storage layer


def _exercise(store: Storage) -> dict:
    """Every operation the run folder uses, with what a reader sees after each."""
    store.write_text("a/manifest.json", '{"v": 1}')
    store.write_text("a/manifest.json", '{"v": 2}')  # an overwrite replaces the file whole
    store.write_table("a/t.parquet", pa.table({"x": [1, 2, 3]}))
    store.write_bytes("b/c/d.bin", b"\x00\x01")
    store.move("b/c/d.bin", "e/d.bin")
    seen = {
        "manifest": store.read_text("a/manifest.json"),
        "table": store.read_table("a/t.parquet", columns=["x"]).column("x").to_pylist(),
        "files_a": store.files("a"),
        "all": store.files(recursive=True),
        "is": (store.is_file("a/t.parquet"), store.is_dir("a"), store.exists("nope"), store.is_file("b/c/d.bin")),
        "missing_folder": store.files("nothing-here"),
    }
    seen["deleted"] = (store.delete("a/t.parquet"), store.delete("a/t.parquet"))
    store.delete_tree("e")
    seen["after"] = store.files(recursive=True)
    return seen


@pytest.mark.subprocess
def test_storage_gives_the_same_results_on_a_local_folder_and_on_s3(s3, tmp_path):
    local = _exercise(Storage.at(tmp_path / "run"))
    remote_store = Storage.at(f"s3://{BUCKET}/storage-ops/")
    assert remote_store.kind == OBJECT and str(remote_store) == f"s3://{BUCKET}/storage-ops"
    remote = _exercise(remote_store)
    assert remote == local
    assert local["manifest"] == '{"v": 2}' and local["table"] == [1, 2, 3]
    assert local["all"] == ["a/manifest.json", "a/t.parquet", "e/d.bin"] and local["after"] == ["a/manifest.json"]
    # S3's commit is the PUT itself: no temporary object is ever written (local: renamed away)
    raw = pafs.FileSystem.from_uri(f"s3://{BUCKET}")[0].get_file_info(pafs.FileSelector(BUCKET, recursive=True))
    assert not [i.path for i in raw if ".tmp-" in i.path]
    with pytest.raises(ValueError, match=r"'\.\.'"):
        remote_store.path("../escape")


def test_fsspec_schemes_and_file_uris_give_the_results_of_a_local_folder(tmp_path):
    """A scheme pyarrow lacks goes through fsspec (here its in-memory file system: an object store, no rename), and a
    `file://` URI is the local folder it names: every run-folder operation reads back as on a local folder."""
    local = _exercise(Storage.at(tmp_path / "run"))
    mem = Storage.at("memory://ernie-vl-test/run")
    assert mem.kind == OBJECT and str(mem) == "memory://ernie-vl-test/run"
    assert _exercise(mem) == local
    uri = Storage.at(f"file://{tmp_path}/run-uri")
    assert uri.kind == LOCAL and uri.local_path == tmp_path / "run-uri"
    assert _exercise(uri) == local


@pytest.mark.subprocess
def test_exactly_once_building_blocks_on_s3(s3):
    out = Storage.at(f"s3://{BUCKET}/blocks")
    pred = out.child("predictions")
    a = write_part(pred, "demo", FP, predictions_table(rows([3, 1, 2])))
    b = write_part(pred, "demo", FP, predictions_table(rows([2, 3, 1])))  # a retried batch: the same object
    assert a == b and list_parts(pred) == [a]
    write_part(pred, "demo", FP, predictions_table(rows([3, 4])))  # 3 twice
    assert reconcile(pred, "demo", FP) == 1 and keys_of(pred) == ["1", "2", "3", "4"]
    assert scan_done(pred, "demo", FP).keys == {f"test\x1f{i}" for i in (1, 2, 3, 4)}
    notes = archive_other_fingerprints(out, "demo", FP2)  # settings changed: FP's rows move aside
    assert any("moved" in n for n in notes) and list_parts(pred, "demo") == []
    assert keys_of(out.child(f"runs/demo-{FP[:12]}/predictions")) == ["1", "2", "3", "4"]
    notes = archive_other_fingerprints(out, "demo", FP)  # and come back
    assert any("restored" in n for n in notes) and keys_of(pred) == ["1", "2", "3", "4"]
    assert not out.exists(f"runs/demo-{FP[:12]}")


# ------------------------------------------------------------------------------------------------ the lease

HOLD = """
import sys, time
from pipelines.run_lock import RunLock
with RunLock(sys.argv[1], ttl_s=float(sys.argv[2])):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.subprocess
def test_lease_refuses_a_live_holder_and_takes_over_a_dead_one(s3):
    where = f"s3://{BUCKET}/leased"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, where, "2"], cwd=ROOT, stdout=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(RuntimeError, match=f"another ernie-vl run is writing to {where}.*pid {holder.pid}"):
            with RunLock(where, ttl_s=20):  # watches up to 20 s; the holder beats every 0.5 s
                pass
        assert len(Storage.at(where).files(".lock")) == 1  # the refused contender withdrew its object
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    t0 = time.monotonic()
    with RunLock(where, ttl_s=30):  # the holder died on this host: taken over at once, not after the ttl
        assert time.monotonic() - t0 < 30
        assert len(Storage.at(where).files(".lock")) == 1
    assert Storage.at(where).files(".lock") == []  # released


@pytest.mark.subprocess
def test_lease_takes_over_a_stale_foreign_lock_and_a_lost_lease_stops_the_holder(s3):
    where = Storage.at(f"s3://{BUCKET}/stale")
    foreign = {"host": "another-node", "pid": 1, "beat": 7, "started_at": "2024-01-01T00:00:00+00:00"}
    where.write_text(".lock/00000000000000000001-deadbeef.json", json.dumps(foreign))
    with RunLock(where, ttl_s=1.5) as lock:  # its beat never changes: stale after one ttl
        names = where.files(".lock")
        assert len(names) == 1 and "deadbeef" not in names[0]
        deadline = time.monotonic() + 10
        while lock.lost is None and time.monotonic() < deadline:
            where.delete(f".lock/{names[0]}")  # another driver judged this one stale and took over
            time.sleep(0.1)
        with pytest.raises(RuntimeError, match="lost the lock"):
            lock.check()


def test_local_folder_keeps_the_kernel_lock(tmp_path):
    with RunLock(tmp_path) as lock:
        assert (tmp_path / ".lock").is_file() and lock.store.kind == "local"
        lock.check()


# ------------------------------------------------------------------------------------------------ inputs


@pytest.mark.subprocess
def test_remote_data_is_staged_once_per_node_and_refreshed_when_it_changes(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("ERNIE_VL_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_cache, "_fresh", set())
    data = write_synthetic_benchmark(tmp_path / "syn", 3, image_size=32)
    remote = Storage.at(f"s3://{BUCKET}/data/staged")
    assert remote.upload(data) == 4
    local = Path(data_cache.stage(str(remote)))
    assert local == tmp_path / "cache" / "s3" / BUCKET / "data" / "staged"
    assert (local / "samples.jsonl").read_bytes() == (data / "samples.jsonl").read_bytes()
    image = local / "images" / "000001.png"
    assert image.read_bytes() == (data / "images" / "000001.png").read_bytes()
    assert data_cache.remote_uri(image) == f"s3://{BUCKET}/data/staged/images/000001.png"
    # a copy of the same size and mtime is not fetched again (marked here to see it stay)
    mtime = image.stat().st_mtime
    image.write_bytes(b"X" * image.stat().st_size)
    os.utime(image, (mtime, mtime))
    data_cache._fresh.clear()
    data_cache.stage(str(remote))
    assert image.read_bytes() == b"X" * image.stat().st_size
    remote.write_bytes("images/000001.png", b"\x89PNG\r\n\x1a\nchanged")  # the remote file changed: fetched again
    data_cache._fresh.clear()
    assert data_cache.local_copy(f"s3://{BUCKET}/data/staged/images/000001.png") == str(image)
    assert image.read_bytes() == b"\x89PNG\r\n\x1a\nchanged"
    remote.delete("images/000002.png")  # deleted upstream: gone from the copy too (a reader must not find it)
    data_cache._fresh.clear()
    data_cache.stage(str(remote))
    assert sorted(p.name for p in (local / "images").iterdir()) == ["000000.png", "000001.png"]
    assert not list(local.rglob(".tmp-*"))
    with pytest.raises(DatasetError, match=f"s3://{BUCKET}/data/nothing"):
        get_benchmark("demo").load(f"s3://{BUCKET}/data/nothing")


def test_model_must_be_a_local_folder():
    with pytest.raises(ValueError, match="local folder that every node has"):
        EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="/tmp/x", model="s3://bucket/ckpt")
    assert EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="s3://bucket/run/").out == "s3://bucket/run"


# ------------------------------------------------------------------------------------------------ end to end

N = 16


@pytest.fixture(scope="module")
def ray_s3(s3, tmp_path_factory):
    """A local Ray (2 CPUs) whose worker processes see the S3 variables and a data cache of their own (another node's
    disk, as far as the driver can tell)."""
    import ray

    from ernie_vl.worker_env import worker_env

    if ray.is_initialized():
        ray.shutdown()
    worker_cache = tmp_path_factory.mktemp("worker-cache")
    old = os.environ.get("ERNIE_VL_DATA_CACHE")
    os.environ["ERNIE_VL_DATA_CACHE"] = str(worker_cache)  # inherited by the raylet, so by every job's workers
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": worker_env()})
    finally:
        if old is None:
            os.environ.pop("ERNIE_VL_DATA_CACHE")
        else:
            os.environ["ERNIE_VL_DATA_CACHE"] = old
    yield ray.get_runtime_context().gcs_address, worker_cache
    ray.shutdown()


@pytest.fixture(scope="module")
def s3_run(ray_s3, tmp_path_factory):
    """`ernie-vl eval --data s3://… --out s3://…` killed (kill -9) after its first part file, then rerun."""
    gcs, worker_cache = ray_s3
    tmp = tmp_path_factory.mktemp("s3run")
    data = write_synthetic_benchmark(tmp / "syn", N, image_size=40, video_every=8)
    Storage.at(f"s3://{BUCKET}/data/syn").upload(data)
    out = f"s3://{BUCKET}/runs/a"
    from ernie_vl.tiny import default_model_path

    cmd = [sys.executable, "-m", "ernie_vl_cli", "eval", "--benchmark", "demo", "--data", f"s3://{BUCKET}/data/syn",
           "--out", out, "--batch-size", "1", "--quiet",  # packs of 4 (pack_batches 4): 4 part files, not 2
           "--model", str(default_model_path())]  # the random tiny: 32 tokens a row, a run long enough to kill
    env = dict(os.environ, RAY_ADDRESS=gcs, PYTHONPATH=str(ROOT), ERNIE_VL_DATA_CACHE=str(tmp / "driver-cache"))
    pred = Storage.at(out).child("predictions")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while proc.poll() is None and not list_parts(pred) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-run, holding the lease
    proc.wait(30)
    first = read_predictions(out)
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return {"out": out, "first": first, "rerun": rerun, "worker_cache": worker_cache, "tmp": tmp,
            "driver_cache": tmp / "driver-cache", "seconds": time.monotonic() - t0}


@pytest.mark.ray
@pytest.mark.subprocess
def test_eval_on_s3_killed_mid_run_and_rerun_every_sample_exactly_once(s3_run):
    rerun, out, first = s3_run["rerun"], s3_run["out"], s3_run["first"]
    assert 0 < len(first) < N and len({r["sample_id"] for r in first}) == len(first)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"{N}/{N} rows" in rerun.stdout and f"results: {out}/predictions/" in rerun.stdout
    df = read_predictions(out)
    assert sorted(r["sample_id"] for r in df) == [f"s{i:06d}" for i in range(N)]  # each exactly once (read dedups)
    store = Storage.at(out)
    names = list_parts(store.child("predictions"), "demo")
    assert sum(store.child("predictions").read_table(n).num_rows for n in names) == N  # no duplicate row stored
    by_id = {r["sample_id"]: r for r in df}
    assert all(by_id[r["sample_id"]]["prediction"] == r["prediction"] for r in first)  # kept, not redone
    # the media were read from S3: every row processed its image or video
    assert all(r["error"] is None and r["media_items"] == 1 and r["visual_tokens"] > 0 for r in df)
    assert sum(r["frame_indices"] is not None for r in df) == N // 8
    manifest = json.loads(store.read_text("manifest.json"))
    b = manifest["benchmarks"]["demo"]
    assert (b["skipped"], b["written"], b["missing"], b["data"]) == (len(first), N - len(first), 0,
                                                                     f"s3://{BUCKET}/data/syn")
    assert store.files(".lock") == [] and not [n for n in store.files(recursive=True) if ".tmp-" in n]
    # the driver staged the dataset; the workers fetched the media they were sent (as URIs) into their own cache
    assert (s3_run["driver_cache"] / "s3" / BUCKET / "data" / "syn" / "samples.jsonl").is_file()
    fetched = list((s3_run["worker_cache"] / "s3" / BUCKET / "data" / "syn").rglob("*.*"))
    assert {p.suffix for p in fetched} == {".png", ".mp4"} and len(fetched) == N - N // 8 + 1
    print(f"s3 eval: killed run + rerun of {N} samples in {s3_run['seconds']:.1f}s")


def _download(store: Storage, dest: Path) -> Path:
    for rel in store.files(recursive=True):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(store.read_bytes(rel))
    return dest


@pytest.mark.ray
@pytest.mark.subprocess
def test_score_and_report_read_the_run_from_s3(s3_run, capsys):
    from pipelines.cli import main as cli  # the commands' own entry point, in this process (no Ray needed)

    out, tmp = s3_run["out"], s3_run["tmp"]
    assert cli(["score", out, "--flavor", "vlmevalkit"]) == 0
    store = Storage.at(out)
    local = _download(store, tmp / "copy")  # the same run as a local folder: what every command computes there
    assert {r["flavor"] for r in rescore(local, "vlmevalkit")} == {"vlmevalkit"}
    assert pq.read_table(local / "metrics.parquet").equals(store.read_table("metrics.parquet"))
    assert {"official", "vlmevalkit"} <= set(store.read_table("metrics.parquet").column("flavor").to_pylist())
    assert cli(["report", out]) == 0
    assert f"wrote {out}/report.html" in capsys.readouterr().out
    assert store.is_file("report.html") and store.is_file("report_files/index.js")
    thumbnails = store.files("report_files/media")  # the media hook staged the S3 data to make them
    assert len([n for n in thumbnails if n.endswith(".jpg")]) >= N - N // 8
    from evals.report import write_report

    assert store.read_text("report.txt") == write_report(local, print_tables=False).text


@pytest.mark.ray
@pytest.mark.subprocess
def test_compare_reads_runs_from_s3(s3_run):
    from pipelines.cli import main as cli

    out, tmp = s3_run["out"], s3_run["tmp"]
    store = Storage.at(out)
    other = f"s3://{BUCKET}/runs/b"  # a copy of the run under another prefix: compared, nothing differs
    for rel in store.child("predictions").files():
        Storage.at(other).write_bytes(f"predictions/{rel}", store.read_bytes(f"predictions/{rel}"))
    assert cli(["compare", out, other, "--out", str(tmp / "cmp"), "--no-media"]) == 0
    flips = pq.read_table(tmp / "cmp" / "flips.parquet").to_pylist()
    assert flips == []  # identical runs: no sample flips
