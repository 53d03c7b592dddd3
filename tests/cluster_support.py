"""A multi-node Ray cluster on this one machine, for tests: a head without CPUs (as production heads are set up) and
worker nodes, each a raylet of its own with its own resources (`ray.cluster_utils.Cluster`), and a way to lose a
worker node the way a machine is lost: its raylet and every process on it killed at once (SIGKILL, by their ids).

The cluster lives in a Ray temp folder of its own (RAY_TMPDIR), so it never meets another Ray instance on this
machine: `ray.init()` without an address joins the cluster named in <temp>/ray/ray_current_cluster, which a shared
/tmp/ray would hand to every other Ray user here while these tests run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from serve_support import free_port

# Lost nodes are declared dead after 3 missed checks 1 s apart (Ray's default: 5 x 3 s), to keep the tests short.
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def _children() -> dict[int, list[int]]:
    """{ppid: [pids]} of every process on the machine (from /proc)."""
    out: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            out.setdefault(ppid, []).append(int(d))
    return out


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def processes_named(fragment: str) -> list[int]:
    """Pids whose command line contains `fragment` (Ray titles its workers, e.g. `ray::MapWorker(...)`)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if fragment.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                    pids.append(int(d))
            except OSError:
                continue
    return pids


class LocalCluster:
    """The head (0 CPUs, the dashboard on 127.0.0.1) and worker nodes added and lost on demand."""

    def __init__(self, cluster, dashboard_port: int):
        self.cluster, self.dashboard_port = cluster, dashboard_port

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def workers(self) -> list:
        return sorted(self.cluster.worker_nodes, key=lambda n: n.node_id)

    def add_worker(self, num_cpus: float = 2):
        return self.cluster.add_node(num_cpus=num_cpus, object_store_memory=100 << 20, include_dashboard=False)

    def ensure_one_worker(self):
        """Exactly one live worker node (earlier tests lose and add nodes)."""
        while len(self.workers) > 1:
            self.lose(self.workers[0])
        return self.workers[0] if self.workers else self.add_worker()

    @staticmethod
    def raylet_pid(node) -> int:
        import ray._private.ray_constants as rc

        return node.all_processes[rc.PROCESS_TYPE_RAYLET][0].process.pid

    def node_of(self, pid: int):
        """The node (head or worker) whose raylet started process `pid`, or None."""
        raylets = {self.raylet_pid(n): n for n in self.cluster.list_all_nodes()}
        seen = 0
        while pid > 1 and seen < 64:
            if pid in raylets:
                return raylets[pid]
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                return None
            seen += 1
        return None

    def lose(self, node) -> list[int]:
        """Kill a worker node as a lost machine dies: its raylet, its agents and every process the raylet started,
        all with SIGKILL by pid at once; then let `Cluster` forget it. Returns the pids killed."""
        pids = [p.process.pid for procs in node.all_processes.values() for p in procs]
        pids += descendants(self.raylet_pid(node))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.cluster.remove_node(node, allow_graceful=False)
        return pids


@contextlib.contextmanager
def local_cluster(worker_cpus: float = 2):
    """A head with 0 CPUs (dashboard and job server on 127.0.0.1) and one worker node with `worker_cpus` CPUs, in a
    private Ray temp folder; yields a `LocalCluster` and removes every node afterwards."""
    from ray.cluster_utils import Cluster

    old_tmp = os.environ.get("RAY_TMPDIR")
    tmp = tempfile.mkdtemp(prefix="evl", dir="/tmp")  # short: Ray's socket paths live under it
    os.environ["RAY_TMPDIR"] = tmp
    port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=0, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
        dashboard_agent_listen_port=free_port(),  # not Ray's fixed 52365: another Ray on this machine may hold it
        object_store_memory=100 << 20, _system_config=HEALTH_CHECKS))
    try:
        lc = LocalCluster(cluster, port)
        lc.add_worker(worker_cpus)
        yield lc
    finally:
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)  # the nodes' sessions and logs
        if old_tmp is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old_tmp


def wait_for(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value (returned) or `timeout_s` passes (AssertionError)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
