"""Connecting to Ray, the one way the batch job and the server start or join it."""

from __future__ import annotations

import os

from ernie_vl.worker_env import default_ray_auth, worker_env


def ensure_ray(num_cpus: int | None = None) -> bool:
    """Connect to Ray: the running session, the cluster named by RAY_ADDRESS, or a new local one.

    Returns True when this call started Ray (the caller then shuts it down)."""
    default_ray_auth()  # a local instance's authentication mode, before Ray is imported (it reads it then)
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=True)
        return True
    # a local instance, never a cluster found through /tmp/ray/ray_current_cluster (joining one takes RAY_ADDRESS);
    # its workers import this checkout even without `pip install -e`
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": worker_env()},
             log_to_driver=True)
    return True
