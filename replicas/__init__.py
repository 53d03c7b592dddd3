"""Ray actors that host model replicas, shared by the batch pipeline and the server.

A replica is either one process holding the whole model, or an expert-sharded gang of K rank actors placed together
in one placement group (`ExpertShardedReplica`). `replicas` imports ray and ernie_vl; `pipelines` and `serve` import
it, never each other.
"""

from .gang import ExpertShardedReplica, GangError

__all__ = ["ExpertShardedReplica", "GangError"]
