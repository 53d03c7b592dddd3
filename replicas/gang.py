"""An expert-sharded model replica as a gang of K Ray actors in one placement group.

Each rank actor joins a `torch.distributed` group (gloo on CPU, NCCL on GPU), loads only its own routed experts
(`ernie_vl.expert_parallel.load_sharded_model`) and runs `ernie_vl.engine.Engine` in lockstep with the others. The
replica object splits a batch of requests (`ModelInputs`) over the ranks (balanced by prompt tokens), runs them and returns
the results in request order (`generate`, used by the pipeline), or runs one lane per rank with its own settings
(`generate_lanes`; `stream_lanes` yields each token as the ranks produce it — the server streams from it: greedy
batches and seeded sampling requests side by side). Each rank streams its tokens step by step (a Ray generator).

Failure semantics: if any rank dies (or a call fails), the whole gang is torn down and rebuilt — a torch.distributed
group cannot survive a lost member — and the batch is run once more on the new gang. Callers that write outputs keyed
by sample id (the pipeline) therefore still write every sample exactly once.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ernie_vl.engine import drain
from ernie_vl.generation import Generated, GenerationSettings
from ernie_vl.inputs import ModelInputs


class GangError(RuntimeError):
    """The gang could not be (re)built or failed again after a restart."""


@ray.remote
def _address_and_port() -> tuple[str, int]:
    """A free TCP port on the node of bundle 0 (the rendezvous of the process group)."""
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port


@ray.remote
class _Rank:
    def __init__(self, rank, world, addr, port, model_path, placement, dtype, device, engine_kwargs):
        import torch
        import torch.distributed as dist

        from ernie_vl.engine import Engine
        from ernie_vl.expert_parallel import Placement, load_sharded_model

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(0)  # Ray exposes the bundle's GPU as device 0
            device = "cuda:0"
        dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world)
        self.rank = rank
        self.placement = Placement(**placement)
        self.model = load_sharded_model(model_path, rank, self.placement, dist.group.WORLD, dtype=dtype, device=device)
        self.engine = Engine(self.model, group=dist.group.WORLD, **engine_kwargs)

    def info(self) -> dict:
        from ernie_vl.expert_parallel import a2a_bytes, expert_load

        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return {"rank": self.rank, "param_bytes": params, "expert_load": expert_load(self.model),
                "a2a_bytes": a2a_bytes(self.model),
                "local_experts": {p: self.placement.local(p, self.rank) for p in ("text", "vision")}}

    @ray.method(_generator_backpressure_num_objects=8)  # at most 8 steps ahead of the consumer
    def stream(self, requests: list[ModelInputs], settings: GenerationSettings):
        """A Ray streaming generator: ("tokens", [(request index, token), ...]) per step, then ("done", results)."""
        steps = self.engine.stream(requests, settings)
        while True:
            try:
                yield "tokens", next(steps)
            except StopIteration as done:
                yield "done", done.value
                return


class ExpertShardedReplica:
    """K rank actors in one placement group (`STRICT_PACK`: one node by default) serving one model replica."""

    def __init__(
        self,
        model_path,
        k: int,
        placement: str = "even",
        dtype=None,
        device: str | None = None,
        num_cpus_per_rank: float = 0.25,
        num_gpus_per_rank: float = 0,
        strategy: str = "STRICT_PACK",
        engine_kwargs: dict | None = None,
        ready_timeout_s: float = 600,
    ):
        from ernie_vl.config import ModelConfig
        from ernie_vl.expert_parallel import Placement
        from ernie_vl.tiny import default_model_path

        if k < 1:
            raise ValueError(f"expert shards must be >= 1, got {k}")
        self.model_path = str(model_path or default_model_path())
        n_experts = ModelConfig.from_file(self.model_path).text.moe_num_experts
        if k > n_experts:
            raise ValueError(f"{k} expert shards for {n_experts} experts per pool: at most {n_experts}")
        plans = {"even": Placement.even, "modality-aware": Placement.modality_aware}
        if placement not in plans:
            raise ValueError(f"placement must be one of {sorted(plans)}, got {placement!r}")
        self.placement = plans[placement](n_experts, k)
        self.k, self.dtype, self.device = k, dtype, device
        self.bundle = {"CPU": num_cpus_per_rank, **({"GPU": num_gpus_per_rank} if num_gpus_per_rank else {})}
        self.strategy = strategy
        self.engine_kwargs = engine_kwargs or {}
        self.ready_timeout_s = ready_timeout_s
        self.restarts = 0
        self._closed = False
        self._pg = None
        self._ranks: list = []
        self._build()

    # ------------------------------------------------------------------ lifecycle
    def _build(self) -> None:
        self._pg = placement_group([dict(self.bundle) for _ in range(self.k)], strategy=self.strategy)
        try:
            ray.get(self._pg.ready(), timeout=self.ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self._pg)
            raise GangError(
                f"could not place {self.k} ranks of {self.bundle} with {self.strategy} within {self.ready_timeout_s} s: "
                "the cluster lacks the resources on one node"
            ) from None
        in_bundle = lambda i: PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=i)  # noqa: E731
        addr, port = ray.get(_address_and_port.options(num_cpus=0, scheduling_strategy=in_bundle(0)).remote())
        placement = asdict(self.placement)
        self._ranks = [
            _Rank.options(
                num_cpus=self.bundle["CPU"], num_gpus=self.bundle.get("GPU", 0), scheduling_strategy=in_bundle(i),
                max_restarts=0,
            ).remote(i, self.k, addr, port, self.model_path, placement, self.dtype, self.device, self.engine_kwargs)
            for i in range(self.k)
        ]
        ray.get([r.info.remote() for r in self._ranks], timeout=self.ready_timeout_s)

    def _teardown(self) -> None:
        for r in self._ranks:
            ray.kill(r, no_restart=True)
        self._ranks = []
        if self._pg is not None:
            remove_placement_group(self._pg)
            self._pg = None

    def shutdown(self) -> None:
        """Kill the ranks and free the placement group for good: a call in flight fails, nothing is rebuilt."""
        self._closed = True
        self._teardown()

    def restart(self) -> None:
        if self._closed:
            raise GangError("the gang was shut down")
        self._teardown()
        time.sleep(0.5)  # let the old group's sockets close before the new rendezvous
        self._build()
        self.restarts += 1

    @property
    def rank_actors(self) -> list:
        return list(self._ranks)

    # ------------------------------------------------------------------ work
    def split(self, requests: list[ModelInputs]) -> list[list[int]]:
        """Request indices per rank, balanced by prompt tokens (longest first onto the lightest rank)."""
        parts: list[list[int]] = [[] for _ in range(self.k)]
        load = [0] * self.k
        for i in sorted(range(len(requests)), key=lambda i: -requests[i].num_prompt_tokens):
            r = min(range(self.k), key=lambda r: (load[r], len(parts[r])))
            parts[r].append(i)
            load[r] += requests[i].num_prompt_tokens
        return parts

    def generate(self, requests: list[ModelInputs], settings: GenerationSettings) -> list[Generated]:
        """One batch under one settings, split over the ranks (`split`); results in request order."""
        parts = self.split(requests)
        results = self.generate_lanes([([requests[i] for i in part], settings) for part in parts])
        out: list[Generated | None] = [None] * len(requests)
        for part, res in zip(parts, results):
            for i, g in zip(part, res):
                out[i] = g
        return out  # type: ignore[return-value]

    def generate_lanes(self, lanes: list[tuple[list[ModelInputs], GenerationSettings]]) -> list[list[Generated]]:
        """One lockstep call with one lane per rank: rank r runs `lanes[r] = (requests, settings)`. Requests may be
        empty and settings may differ between ranks (budgets, greedy or seeded sampling): the ranks stay in lockstep
        whatever each one runs. Same restart-and-rerun-once semantics as `stream_lanes`."""
        return drain(self.stream_lanes(lanes))

    def stream_lanes(self, lanes: list[tuple[list[ModelInputs], GenerationSettings]]):
        """`generate_lanes` as it runs: yields `(lane, index in lane, token)` as soon as a rank produced the token
        (with its `sampling.TokenLogprobs` appended when the lane's settings ask for log-probabilities),
        and returns the per-lane `Generated` lists. If a rank dies (or a call fails) the gang is rebuilt and the
        lanes run once more; tokens already yielded are not yielded again (the rerun reproduces them: greedy, or
        sampling from the lane's seed). A second failure raises `GangError`."""
        if len(lanes) != self.k:
            raise ValueError(f"{len(lanes)} lanes for a gang of {self.k} ranks")
        sent = [[0] * len(reqs) for reqs, _ in lanes]
        try:
            return (yield from self._stream_once(lanes, sent))
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as first:
            try:
                self.restart()
                return (yield from self._stream_once(lanes, sent))
            except Exception as second:
                raise GangError(f"gang failed again after a restart: {second}") from first

    def _stream_once(self, lanes, sent):
        gens = {r: rank.stream.remote(reqs, settings) for r, (rank, (reqs, settings)) in enumerate(zip(self._ranks, lanes))}
        results: list = [None] * self.k
        seen = [[0] * len(reqs) for reqs, _ in lanes]  # tokens of this attempt, per request
        while gens:
            ready, _ = ray.wait(list(gens.values()), num_returns=1)
            for gen in ready:
                r = next(r for r, g in gens.items() if g is gen)
                kind, payload = ray.get(next(gen))
                if kind == "done":
                    results[r] = payload
                    del gens[r]  # its last item: never wait on a finished generator
                    continue
                for i, tok, *logprobs in payload:  # logprobs: present when the lane's settings ask for them
                    seen[r][i] += 1
                    if seen[r][i] > sent[r][i]:
                        sent[r][i] += 1
                        yield (r, i, tok, *logprobs)
        return results

    def info(self) -> list[dict]:
        return ray.get([r.info.remote() for r in self._ranks])
