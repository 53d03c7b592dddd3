"""Ray actors that host model replicas, shared by the batch pipeline and the server, and the one way both connect to
Ray (`session.ensure_ray`).

A replica is either one process holding the whole model, or an expert-sharded gang of K rank actors placed together
in one placement group (`ExpertShardedReplica`). `replicas` imports ray and ernie_vl; `pipelines` and `serve` import
it, never each other. The gang is imported on first use: `replicas.session` must run before Ray is imported (a local
instance's authentication mode is read on import).
"""

__all__ = ["ExpertShardedReplica", "GangError"]


def __getattr__(name: str):
    if name in __all__:
        from . import gang

        return getattr(gang, name)
    raise AttributeError(f"module 'replicas' has no attribute {name!r}")
