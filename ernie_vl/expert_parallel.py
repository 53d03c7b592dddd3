"""Expert parallelism: a model replica spread over K ranks, each holding 1/K of the routed experts of both pools.

Every rank keeps attention, embeddings, shared experts, the dense layer, routers and the vision tower (replicated) and
runs them on its own requests; routed-expert work travels by all-to-all:

    router (local) -> sort assignments by (owner rank, expert) -> all_to_all counts, rows, expert ids (dispatch)
    -> local experts on the received rows -> all_to_all results back (combine) -> weight and sum per token

NOTE: every rank issues the same collectives in the same order whatever its batch holds: each sparse layer runs the
text pool then the vision pool during prefill (zero-size exchanges for a rank without visual tokens) and the text
pool only during decode. A rank without requests calls `idle_prefill`, which issues exactly the prefill's exchanges;
in decode every rank runs its step over the same number of slots (`fixed_exchange`), live rows or not, so text-only
and image batches on different ranks cannot deadlock.

Backends: gloo on CPU (tests), NCCL on GPU. Legend: T tokens, D hidden, K top-k, A = T*K assignments, W ranks.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .moe import experts



# ------------------------------------------------------------------------------------------------ placement
@dataclass
class Placement:
    """Which rank owns each expert of each pool ("text", "vision")."""

    world: int
    owners: dict[str, list[int]]

    def local(self, pool: str, rank: int) -> list[int]:
        return [e for e, r in enumerate(self.owners[pool]) if r == rank]

    def validate(self, n_experts: int) -> None:
        for pool, own in self.owners.items():
            if len(own) != n_experts or not all(0 <= r < self.world for r in own):
                raise ValueError(f"placement for {pool} must name a rank in 0..{self.world - 1} for each of {n_experts} experts")

    @classmethod
    def even(cls, n_experts: int, world: int) -> "Placement":
        """Contiguous equal ranges per rank, for both pools."""
        own = [e * world // n_experts for e in range(n_experts)]
        return cls(world, {"text": own, "vision": list(own)})

    @classmethod
    def modality_aware(cls, n_experts: int, world: int, vision_ranks: int = 1) -> "Placement":
        """Text experts evenly over all ranks; vision experts (prefill-only) on the last `vision_ranks` ranks, which
        hold fewer text experts in exchange, so decode-time weight reads stay balanced."""
        if not 1 <= vision_ranks <= world:
            raise ValueError(f"vision_ranks must be in 1..{world}, got {vision_ranks}")
        text = [e * world // n_experts for e in range(n_experts)]
        first = world - vision_ranks
        vision = [first + e * vision_ranks // n_experts for e in range(n_experts)]
        return cls(world, {"text": text, "vision": vision})

    @classmethod
    def from_load(cls, loads: dict[str, list[float]], world: int) -> "Placement":
        """Greedy longest-processing-time packing of measured per-expert loads (e.g. routed token counts)."""
        owners = {}
        for pool, load in loads.items():
            totals = [0.0] * world
            counts = [0] * world
            cap = -(-len(load) // world)  # equal expert counts per rank keep memory even
            own = [0] * len(load)
            for e in sorted(range(len(load)), key=lambda i: -load[i]):
                r = min((r for r in range(world) if counts[r] < cap), key=lambda r: totals[r])
                own[e] = r
                totals[r] += load[e]
                counts[r] += 1
            owners[pool] = own
        return cls(world, owners)


# ------------------------------------------------------------------------------------------------ sharded experts
class ShardedExperts(nn.Module):
    """Drop-in for `moe.Experts` holding only this rank's experts; forward = dispatch -> local experts -> combine."""

    def __init__(
        self, n_experts: int, hidden: int, inner: int, local_ids: list[int], owners: list[int], world: int, group=None
    ):
        super().__init__()
        self.n_experts, self.group = n_experts, group
        self.gate_up_proj = nn.Parameter(torch.empty(len(local_ids), 2 * inner, hidden))
        self.down_proj = nn.Parameter(torch.empty(len(local_ids), hidden, inner))
        self.register_buffer("owner", torch.tensor(owners, dtype=torch.long), persistent=False)
        self.register_buffer("slot", _slots(owners), persistent=False)
        self.register_buffer("tokens_per_local_expert", torch.zeros(len(local_ids), dtype=torch.long), persistent=False)
        self.world = world
        self.capacity: int | None = None  # rows per destination of a fixed-size exchange (see `fixed_exchange`)
        self.bytes_sent = 0  # all-to-all traffic of this rank (dispatch + combine), for benchmarks

    def _a2a(self, out, inp, out_splits=None, in_splits=None):
        self.bytes_sent += inp.numel() * inp.element_size()
        dist.all_to_all_single(out, inp, out_splits, in_splits, group=self.group)
        return out

    def forward(self, x_TD: torch.Tensor, idx_TK: torch.Tensor, w_TK: torch.Tensor) -> torch.Tensor:
        """Exchange sizes come from the routing (one host read of the counts), or are fixed when `capacity` is set
        (`fixed_exchange`: decode steps, which can then be captured in a CUDA graph)."""
        T, D = x_TD.shape
        K = idx_TK.shape[1] if idx_TK.dim() == 2 else 0
        flat_A = idx_TK.reshape(-1)
        dest_A = self.owner[flat_A]
        order_A = (dest_A * self.n_experts + flat_A).argsort(stable=True)  # by owner rank, then expert
        tok_A = order_A // max(K, 1)
        send_counts = torch.zeros(self.world, dtype=torch.long, device=x_TD.device).scatter_add_(
            0, dest_A, torch.ones_like(dest_A)
        )
        x_AD, slot_A = x_TD[tok_A], self.slot[flat_A[order_A]]
        if self.capacity is None:
            recv_counts = self._a2a(torch.empty_like(send_counts), send_counts)
            sc, rc = send_counts.tolist(), recv_counts.tolist()
            recv_x = self._a2a(x_TD.new_empty(sum(rc), D), x_AD.contiguous(), rc, sc)
            recv_slot = self._a2a(flat_A.new_empty(sum(rc)), slot_A.contiguous(), rc, sc)
            valid = None
            back = self._a2a(x_TD.new_empty(flat_A.numel(), D), self._local_experts(recv_x, recv_slot), sc, rc)
        else:
            # Every rank sends `capacity` rows to every rank: assignment j (sorted by destination) goes to row
            # dest * C + its place among that destination's assignments; unused rows carry slot -1.
            C = self.capacity
            if flat_A.numel() > C:
                raise ValueError(f"{flat_A.numel()} expert assignments exceed the fixed exchange capacity {C}")
            dest_sorted = dest_A[order_A]
            first_of_dest = send_counts.cumsum(0) - send_counts
            row_A = dest_sorted * C + torch.arange(flat_A.numel(), device=x_TD.device) - first_of_dest[dest_sorted]
            send_x = x_TD.new_zeros(self.world * C, D).index_copy_(0, row_A, x_AD)
            send_slot = flat_A.new_full((self.world * C,), -1).index_copy_(0, row_A, slot_A)
            recv_x = self._a2a(torch.empty_like(send_x), send_x)
            recv_slot = self._a2a(torch.empty_like(send_slot), send_slot)
            valid = recv_slot >= 0
            y = self._local_experts(recv_x, recv_slot.clamp(min=0), valid)
            back = self._a2a(torch.empty_like(y), y)[row_A]
        out = torch.zeros_like(x_TD)
        if flat_A.numel():
            out.index_add_(0, tok_A, (back * w_TK.reshape(-1)[order_A, None]).to(out.dtype))
        return out

    def _local_experts(self, x_RD: torch.Tensor, slot_R: torch.Tensor, valid_R: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """The received rows through this rank's experts: `moe.experts` with one expert per row and weight 1 (0 for
        the padding rows of a fixed exchange) — the same grouped kernel as an unsharded model."""
        n_local = self.gate_up_proj.shape[0]
        hits = torch.ones_like(slot_R) if valid_R is None else valid_R.long()
        self.tokens_per_local_expert += torch.zeros(n_local, dtype=torch.long, device=x_RD.device).scatter_add_(
            0, slot_R, hits)
        w_R1 = hits.to(x_RD.dtype)[:, None]
        return experts(x_RD, slot_R[:, None], w_R1, self.gate_up_proj, self.down_proj)


def _slots(owners: list[int]) -> torch.Tensor:
    """slot[e] = position of expert e among the experts of its owner rank."""
    seen: dict[int, int] = {}
    out = []
    for r in owners:
        out.append(seen.get(r, 0))
        seen[r] = seen.get(r, 0) + 1
    return torch.tensor(out, dtype=torch.long)


# ------------------------------------------------------------------------------------------------ building a shard
def _pools(model):
    for layer in model.model.language_model.layers:
        if layer.is_moe:
            yield layer.mlp.text_moe, "text"
            yield layer.mlp.vision_moe, "vision"


def shard_model(model, rank: int, placement: Placement, group=None):
    """Replace every pool's experts by this rank's `ShardedExperts`, copying its slices of the full weights."""
    t = model.config.text
    placement.validate(t.moe_num_experts)
    for pool, name in _pools(model):
        local = placement.local(name, rank)
        inner = t.moe_intermediate_size[0 if name == "text" else 1]
        full = pool.experts
        sharded = ShardedExperts(
            t.moe_num_experts, t.hidden_size, inner, local, placement.owners[name], placement.world, group
        )
        idx = torch.tensor(local, dtype=torch.long)
        sharded.gate_up_proj = nn.Parameter(full.gate_up_proj.data[idx].clone(), requires_grad=False)
        sharded.down_proj = nn.Parameter(full.down_proj.data[idx].clone(), requires_grad=False)
        pool.experts = sharded.to(full.gate_up_proj.device)
    return model


def load_sharded_model(path: str | Path | None, rank: int, placement: Placement, group=None, *, dtype=None, device=None):
    """Load a replica shard reading only this rank's expert tensors from the checkpoint (either layout)."""
    from .weights import load_model

    def factory(model):
        t = model.config.text
        placement.validate(t.moe_num_experts)
        for pool, name in _pools(model):
            inner = t.moe_intermediate_size[0 if name == "text" else 1]
            pool.experts = ShardedExperts(
                t.moe_num_experts, t.hidden_size, inner, placement.local(name, rank), placement.owners[name],
                placement.world, group,
            )

    mine = {pool: placement.local(pool, rank) for pool in ("text", "vision")}  # expert ids of each pool's stack
    model = load_model(path, dtype=dtype, device=device, expert_subset=mine, prepare=factory)
    for pool, name in _pools(model):
        e = pool.experts
        e.owner, e.slot = e.owner.to(model.device), e.slot.to(model.device)
        e.tokens_per_local_expert = torch.zeros(e.gate_up_proj.shape[0], dtype=torch.long, device=model.device)
    return model


# ------------------------------------------------------------------------------------------------ lockstep helpers
def idle_prefill(model) -> None:
    """The collectives of a prefill, with nothing to send (every pool, in layer order): for a rank without requests."""
    t = model.config.text
    x = torch.empty(0, t.hidden_size, dtype=model.dtype, device=model.device)
    idx = torch.empty(0, t.moe_k, dtype=torch.long, device=model.device)
    w = torch.empty(0, t.moe_k, dtype=model.dtype, device=model.device)
    for pool, _ in _pools(model):
        pool.experts(x, idx, w)


@contextmanager
def fixed_exchange(model, slots: int):
    """Decode steps over `slots` rows (the same on every rank): each pool exchanges `slots` x top-k rows with every
    rank, padded, so the step has fixed shapes and no host read (capturable in a CUDA graph); padding rows cost
    expert compute, which a decode step, bound by reading the weights, barely notices."""
    pools = [pool.experts for pool, _ in _pools(model)]
    cap = slots * model.config.text.moe_k
    for e in pools:
        e.capacity = cap
    try:
        yield
    finally:
        for e in pools:
            e.capacity = None


def max_over_ranks(values: list[int], device, group=None) -> list[int]:
    t = torch.tensor(values, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t.tolist()


def any_rank(flag: bool, device, group=None) -> bool:
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return bool(t.item())


def a2a_bytes(model) -> int:
    """Bytes this rank has sent through dispatch/combine exchanges since loading."""
    return sum(pool.experts.bytes_sent for pool, _ in _pools(model))


def expert_load(model) -> dict[str, list[int]]:
    """Tokens processed per local expert on this rank since loading, per pool (summed over layers)."""
    out: dict[str, list[int]] = {"text": [], "vision": []}
    for pool, name in _pools(model):
        counts = pool.experts.tokens_per_local_expert.tolist()
        out[name] = [a + b for a, b in zip(out[name], counts)] if out[name] else counts
    return out
