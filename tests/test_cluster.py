"""The batch job and the server on a multi-node Ray cluster on this machine (tests/cluster_support.py): a head with no
CPUs, as production heads are set up, and worker nodes with their own raylets and resources, so every stage, every
model replica and every Serve replica runs on a worker node while the drivers, the input blocks, the job server and
Serve's controller and proxy stay on the head. Real Ray, real Parquet, real HTTP; the tiny checkpoint.

Covers: `ray job submit` of `ernie-vl eval` (driver on the head, every stage on the worker, exactly the expected rows,
status and logs read back, no error-level line); a worker node lost mid-run (its raylet and all its processes
SIGKILLed) while a replacement joins, as an autoscaler would bring one: the driver rebuilds the pipeline over the
samples not written yet and the run finishes by itself, every sample once;
a node lost with no room anywhere: a one-line error within Ray Data's no-progress timeout, then the rerun (a node back)
finishes exactly once; Serve replaces a replica whose node was lost; and a plain local `ernie-vl eval` prints no
token-authentication warning and no error-level line. Marked `cluster` (and run by default).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import ray  # noqa: F401 - part of the install: a missing one must fail, not skip

from cluster_support import local_cluster, processes_named, wait_for
from pipelines.bench import write_synthetic_benchmark

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.subprocess]

N = 24  # samples per run: 6 model calls of 4 (small enough for 2 shared cores, enough to lose a node mid-run)
STAGES = ("MapBatches(PreprocessStage)", "MapBatches(ReplicaStage)", "MapBatches(ScoreStage)")


@pytest.fixture(scope="module")
def cluster():
    from ernie_vl.worker_env import worker_env

    if ray.is_initialized():
        ray.shutdown()
    with local_cluster(worker_cpus=2) as lc:
        ray.init(address=lc.address, log_to_driver=False, runtime_env={"env_vars": worker_env()})
        # this driver is on the head, as a job's driver is: losing a worker node must not take it along
        assert ray.get_runtime_context().get_node_id() == lc.cluster.head_node.node_id
        try:
            yield lc
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_benchmark(tmp_path_factory.mktemp("cluster") / "data", N, image_size=40)


def parts(out) -> list[Path]:
    pred = Path(out) / "predictions"
    return sorted(pred.glob("part-*.parquet")) if pred.is_dir() else []


def exactly_once(out) -> pd.DataFrame:
    df = pd.read_parquet(Path(out) / "predictions")
    assert not df["sample_id"].duplicated().any(), "a sample was written twice"
    assert sorted(df["sample_id"]) == [f"s{i:06d}" for i in range(N)]
    assert df["error"].isna().all(), df["error"].dropna().tolist()[:3]
    return df


class StageWatch:
    """Which node each pipeline stage's processes run on, polled from /proc while a run goes on."""

    def __init__(self, lc):
        self.lc, self.seen, self._stop = lc, {s: set() for s in STAGES}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            for stage in STAGES:
                for pid in processes_named(stage):
                    node = self.lc.node_of(pid)
                    if node is not None:
                        self.seen[stage].add((pid, node.node_id))
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def nodes(self, stage) -> set[str]:
        return {n for _, n in self.seen[stage]}


# ------------------------------------------------------------------------------------------------ batch job


def test_worker_node_lost_mid_run_with_a_replacement_finishes_by_itself(cluster, data, tmp_path):
    """`ernie-vl eval` as a user runs it (its own process, driver on the head): the worker node is lost mid-run and
    a replacement joins; the driver rebuilds the pipeline on it and the command ends with status 0, every sample
    once. (A process of its own: what the failed execution leaves behind dies with it, as it does for a user.)"""
    from ernie_vl.tiny import default_model_path

    lost = cluster.ensure_one_worker()
    out = tmp_path / "out"
    env = dict(os.environ, RAY_ADDRESS=cluster.address, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "ernie_vl_cli", "eval", "--benchmark", "demo", "--data", str(data), "--out",
           str(out), "--batch-size", "1", "--quiet", "--model", str(default_model_path())]  # packs of 4: 6 part files
    with StageWatch(cluster) as watch:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: parts(out) or proc.poll() is not None, 240, 0.02, "the first part file")
            assert proc.poll() is None, proc.communicate()
            assert 0 < len(parts(out)) < N // 4, "the node was not lost mid-run"
            killed = cluster.lose(lost)  # its raylet and every process on it, the replica among them
            fresh = cluster.add_worker()  # room again at once, as an autoscaler would bring a node
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, (stdout[-2000:], stderr[-3000:])
    assert f"demo: {N}/{N} rows ({N} ok, 0 failed" in stdout, stdout[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    restart = [ln for ln in stderr.splitlines() if ln.startswith("ernie-vl eval: pipeline restarted")]
    assert len(restart) == 1 and restart[0].startswith("ernie-vl eval: pipeline restarted (1 of at most 4) after a "
                                                       "lost actor or node"), stderr[-3000:]
    exactly_once(out)
    manifest = json.loads((out / "manifest.json").read_text())
    b = manifest["benchmarks"]["demo"]
    assert (b["missing"], b["failed"]) == (0, 0) and b["written"] + b["skipped"] == N
    assert any(n.startswith("pipeline restarted (1 of at most 4)") for n in manifest["last_run"]["notes"])
    replicas = watch.seen["MapBatches(ReplicaStage)"]
    assert {n for p, n in replicas if p in killed} == {lost.node_id}  # the replica that was lost ran there
    assert fresh.node_id in watch.nodes("MapBatches(ReplicaStage)")  # the rebuilt pipeline's replica runs there


def test_node_lost_with_no_room_anywhere_is_one_line_then_a_rerun_finishes(cluster, data, tmp_path):
    lost = cluster.ensure_one_worker()
    out = tmp_path / "out"
    env = dict(os.environ, RAY_ADDRESS=cluster.address, PYTHONPATH=str(ROOT),
               RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S="20")  # Ray Data's wait for progress (default 30 min)
    # --batch-size 1: packs of 4 samples (pack_batches=4), one at a time on the replica, so most are still to do
    from ernie_vl.tiny import default_model_path

    cmd = [sys.executable, "-m", "ernie_vl_cli", "eval", "--benchmark", "demo", "--data", str(data), "--out",
           str(out), "--batch-size", "1", "--quiet", "--model", str(default_model_path())]  # the tiny one (32 tokens)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: parts(out) or proc.poll() is not None, 240, 0.02, "the first part file")
        assert proc.poll() is None, proc.communicate()
        assert len(pd.read_parquet(out / "predictions")) < N // 2, "the node was not lost mid-run"
        cluster.lose(lost)  # no other node has a CPU: nothing can be restarted anywhere
        t_lost = time.monotonic()
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    waited = time.monotonic() - t_lost
    first = pd.read_parquet(out / "predictions")
    assert proc.returncode == 1, (stdout[-2000:], stderr[-3000:])
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("ernie-vl eval: error: the run made no progress for 20 s"), last
    assert "rerun the same command to resume" in last and str(out) in last
    assert 20 <= waited < 150, waited  # bounded by the timeout, not an endless wait
    assert 0 < len(first) < N and not first["sample_id"].duplicated().any()

    cluster.add_worker()  # room again: the same command finishes the run, every sample exactly once
    env.pop("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    df = exactly_once(out)
    kept = df.set_index("sample_id").loc[first["sample_id"], "prediction"]
    assert kept.tolist() == first["prediction"].tolist()  # the first run's rows were kept, not redone
    b = json.loads((out / "manifest.json").read_text())["benchmarks"]["demo"]
    assert (b["skipped"], b["written"], b["missing"]) == (len(first), N - len(first), 0), done.stdout


# ------------------------------------------------------------------------------------------------ a normal run


# Ray's error-level lines: native (`[date time,ms E pid tid] file.cc:line: ...`) and Python (`... ERROR file.py:...`),
# warnings and tracebacks
ERROR_LINE = re.compile(r"\d,\d{3} E \d+ \d+\]|\b(ERROR|WARNING|Traceback)\b")


def unexpected_lines(text: str) -> list[str]:
    """Error-level, warning and traceback lines of a run's output. None is expected: in particular not Ray core's
    error about restartable actors with constructor arguments in the object store (ray-project/ray#57733), which
    every Ray Data actor pool caused while Ray restarted the pipeline's actors (dataflow.POOL_ACTOR_OPTIONS)."""
    return [text[text.rfind("\n", 0, m.start()) + 1: text.find("\n", m.start())] for m in ERROR_LINE.finditer(text)]


def test_ray_job_submit_runs_ernie_vl_eval_on_head_and_worker(cluster, data, tmp_path):
    """`ray job submit` (the README's command) through the dashboard's job server: the driver runs on the head,
    every stage on the worker node (the head has no CPUs), paths (data, checkpoint, output) are the same on every
    node; the job succeeds, its logs carry the summary and no error-level line, every sample is written once."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    worker = cluster.ensure_one_worker()
    out = tmp_path / "out"
    runtime_env = {"env_vars": {"ERNIE_VL_HOME": os.environ["ERNIE_VL_HOME"]}}  # where the checkpoint is, on every node
    submit = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", cluster.dashboard,
              "--submission-id", "eval-demo", "--runtime-env-json", json.dumps(runtime_env), "--no-wait", "--",
              "ernie-vl", "eval", "--benchmark", "demo", "--data", str(data), "--out", str(out), "--batch-size", "4",
              "--quiet"]

    def submitted():  # a fresh head's job agent needs a few seconds: Ray answers "try again later" until then
        sub = subprocess.run(submit, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert sub.returncode == 0 or "No available agent" in sub.stderr, sub.stdout[-2000:] + sub.stderr[-2000:]
        return sub.returncode == 0

    client = JobSubmissionClient(cluster.dashboard)
    with StageWatch(cluster) as watch:
        wait_for(submitted, 90, 2.0, "the job server to take the job")
        status = wait_for(lambda: (s := client.get_job_status("eval-demo")).is_terminal() and s, 300, 0.5, "the job")
    logs = client.get_job_logs("eval-demo")
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert f"demo: {N}/{N} rows ({N} ok, 0 failed; {N} written now, 0 already done)" in logs, logs[-3000:]
    assert f"results: {out}/predictions/" in logs
    df = exactly_once(out)
    assert df["fingerprint"].nunique() == 1 and (df["generated_tokens"] > 0).all()
    assert client.get_job_info("eval-demo").driver_node_id == cluster.cluster.head_node.node_id
    for stage in STAGES:  # every stage ran on the worker node, none on the head
        assert watch.nodes(stage) == {worker.node_id}, (stage, watch.seen[stage])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["last_run"]["resources"]["cluster_cpus"] == 2  # the worker's; the head adds none
    assert not unexpected_lines(logs), unexpected_lines(logs)
    assert "Token authentication" not in logs


def test_a_local_run_prints_no_error_or_token_warning(data, tmp_path):
    """The plain `ernie-vl eval` of a new user (no cluster: a local Ray instance): no token-authentication warning
    (the job says RAY_AUTH_MODE=token itself) and no error-level line, the summary at the end."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_TMPDIR")}
    cmd = [sys.executable, "-m", "ernie_vl_cli", "eval", "--benchmark", "demo", "--data", str(data), "--limit", "4",
           "--out", str(tmp_path / "out"), "--num-cpus", "2", "--quiet"]
    done = subprocess.run(cmd, cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=300)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    assert "demo: 4/4 rows (4 ok, 0 failed; 4 written now, 0 already done)" in done.stdout, text[-3000:]
    assert "Token authentication" not in text and "RAY_AUTH_MODE" not in text, text[-3000:]
    assert not unexpected_lines(text), unexpected_lines(text)


# ------------------------------------------------------------------------------------------------ Ray Serve


def test_serve_replaces_a_replica_whose_node_was_lost(cluster):
    import httpx
    from ray import serve

    from serve_support import free_port
    from serve.app import build_app

    first = cluster.ensure_one_worker()
    port = free_port()
    # controller and proxy on the head (they need no CPU); one proxy, as every node here shares one address
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({"num_cpus": 0.5, "torch_threads": 1, "default_max_tokens": 4, "max_tokens_limit": 16}),
                  name="ernie-vl", route_prefix="/")
        body = {"model": "ernie-vl-tiny", "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 4}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"

        def replica_nodes():  # of this cluster's replica processes (another Serve on this machine is not ours)
            return {n.node_id for n in map(cluster.node_of, processes_named("ServeReplica:ernie-vl")) if n}

        assert httpx.post(url, json=body, timeout=60).status_code == 200
        assert replica_nodes() == {first.node_id}

        second = cluster.add_worker()  # room elsewhere (or an autoscaler's new node), then the replica's node is lost
        cluster.lose(first)

        def answered():
            try:
                return httpx.post(url, json=body, timeout=30).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answered, 120, 0.5, "an answer from a replacement replica")
        assert replica_nodes() == {second.node_id}
        for _ in range(3):
            r = httpx.post(url, json=body, timeout=60)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        serve.shutdown()
