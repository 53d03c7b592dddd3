"""A run that the Ray cluster cannot finish: which failures those are, and the one line that tells the user.

The pipeline's actors are not restarted by Ray (`dataflow.POOL_ACTOR_OPTIONS`); the driver recovers instead: when
an actor or its node is lost (`is_lost_worker`) it builds the pipeline again over the samples not yet written
(`batch_eval.run_eval`, at most `max_pipeline_restarts` times), so a lost node with a replacement (another node with
room, or one an autoscaler brings) costs time, not the run. What is left reaches the driver as one of:

* `ray.data.exceptions.ExecutionTimeoutError`: nothing moved for Ray Data's `execution_no_progress_timeout_s`
  (`RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S`, 30 min by default) — typically actors waiting to be placed on
  CPUs/GPUs that no live node has: a lost node and no room anywhere, and no autoscaler bringing one in time;
* `ray.exceptions.RayActorError` (ActorDiedError, ...): actors were lost more often than the pipeline is rebuilt
  (a sample that kills its actor every time ends here instead of looping);
* `ray.exceptions.ObjectLostError` and its kinds: data that Ray could neither find nor rebuild, as often;
* `ClusterError`: the cluster cannot hold the job's stages at all (found while planning, before anything runs).

A failure of this project's own code inside a stage (`RayTaskError`) is none of these: that is a bug and keeps its
traceback. Rows written before a cluster failure are complete and kept (resume.py); rerunning the command resumes.
"""

from __future__ import annotations


class ClusterError(RuntimeError):
    """The Ray cluster lacks what the run needs (CPUs, GPUs); the message names what is missing."""


def _kinds() -> tuple[type[BaseException], ...]:
    from ray.data.exceptions import ExecutionTimeoutError
    from ray.exceptions import ObjectLostError, RayActorError

    return ClusterError, ExecutionTimeoutError, RayActorError, ObjectLostError


def is_cluster_failure(exc: BaseException) -> bool:
    """Whether `exc` is one of the failures listed in the module docstring (Ray is imported only if it is loaded)."""
    import sys

    if isinstance(exc, ClusterError):
        return True
    return "ray" in sys.modules and isinstance(exc, _kinds())


def is_lost_worker(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a lost actor, worker process or node, or data lost with one: what the
    driver recovers from by building the pipeline again."""
    import sys

    if "ray" not in sys.modules:
        return False
    from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, WorkerCrashedError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (RayActorError, ObjectLostError, NodeDiedError, WorkerCrashedError)):
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
    return False


def _nothing() -> None:
    return None


def wait_for_a_cpu() -> None:
    """After a lost actor or node, before the pipeline is built again: wait until a task that needs one CPU can run
    somewhere — what Ray Data's first step (reading the input blocks' metadata, outside its executor and its
    no-progress timeout) needs — for at most Ray Data's no-progress timeout. Raises ExecutionTimeoutError when no live
    node has a CPU by then (its probe task is cancelled)."""
    import ray
    from ray.data.exceptions import ExecutionTimeoutError

    timeout = no_progress_timeout_s()
    probe = ray.remote(num_cpus=1, max_retries=0)(_nothing).remote()
    ready, _ = ray.wait([probe], timeout=timeout if timeout > 0 else None)
    if not ready:
        ray.cancel(probe)
        raise ExecutionTimeoutError(f"no live node had a CPU for {timeout:g} s")


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n", 1)[0].split())
    return text if len(text) <= 300 else text[:297] + "..."


def no_progress_timeout_s() -> float:
    """Ray Data's no-progress timeout in this process (seconds; <= 0: none)."""
    from ray.data import DataContext

    return float(DataContext.get_current().execution_no_progress_timeout_s)


def describe(exc: BaseException) -> str:
    """One line for a cluster failure: what happened, and that a rerun of the same command resumes."""
    from ray.data.exceptions import ExecutionTimeoutError
    from ray.exceptions import ObjectLostError, RayActorError

    if isinstance(exc, ExecutionTimeoutError):
        what = (f"the run made no progress for {no_progress_timeout_s():g} s: its actors are waiting for CPUs/GPUs "
                "that no live node has (a node was lost and no other has room?), or one batch takes longer than that "
                "(RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S sets how long to wait)")
    elif isinstance(exc, RayActorError):
        what = (f"pipeline actors were lost more often than the run rebuilds its pipeline "
                f"({type(exc).__name__}: {_first_line(exc)})")
    elif isinstance(exc, ObjectLostError):
        what = f"Ray lost data it could not rebuild ({type(exc).__name__}: {_first_line(exc)})"
    else:
        what = _first_line(exc)
    return f"{what}; rows written so far are kept: rerun the same command to resume"
