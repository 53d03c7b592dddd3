"""Modality-isolated mixture of experts: router -> dispatch -> experts, with one seam for the experts kernel.

Mirrors transformers 5.23.0 `Ernie4_5_VLMoeMoeBlock` (model-spec §5): text tokens go to the text pool, image/video
tokens (including their start/end tokens) to the vision pool, and every token also through the shared experts.
Tokens are split between pools with index tensors, never with a data-dependent Python branch.

Experts implementations (chosen once with `set_experts_impl`):
* "reference": the transformers eager loop (per hit expert, `index_add_` in expert order) — the test oracle;
* "grouped": assignments sorted by expert, one grouped matrix multiply per projection (`F.grouped_mm`, on CUDA
  and on CPU), or contiguous per-expert slices of the sorted tokens where grouped_mm does not apply (e.g. float64).

Legend: T tokens, D hidden, E experts per pool, K top-k, F expert FFN width, A = T*K assignments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_IMPLS = ("reference", "grouped")
_experts_impl = "grouped"


def set_experts_impl(name: str) -> None:
    global _experts_impl
    if name not in _IMPLS:
        raise ValueError(f"unknown experts implementation {name!r}; choose one of {_IMPLS}")
    _experts_impl = name


class MLP(nn.Module):
    """SwiGLU MLP: the dense layers and the shared experts."""

    def __init__(self, hidden: int, inner: int, bias: bool):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Statics(nn.Module):
    """Holds the expert-score correction bias (named as in the checkpoints: `gate.moe_statics.*`)."""

    def __init__(self, n_experts: int):
        super().__init__()
        self.e_score_correction_bias = nn.Parameter(torch.zeros(1, n_experts, dtype=torch.float32), requires_grad=False)


class Router(nn.Module):
    """Top-k softmax router, entirely in float32 (its weights stay float32 whatever the model dtype)."""

    def __init__(self, hidden: int, n_experts: int, k: int, norm_min: float):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_experts, hidden, dtype=torch.float32))
        self.moe_statics = Statics(n_experts)
        self.k, self.norm_min = k, norm_min

    def forward(self, x_TD: torch.Tensor):
        logits_TE = F.linear(x_TD.float(), self.weight.float())
        probs_TE = logits_TE.softmax(dim=-1)
        # NOTE: the correction bias picks the experts but does not weight them.
        idx_TK = torch.topk(probs_TE + self.moe_statics.e_score_correction_bias.float().squeeze(0), self.k, dim=-1).indices
        w_TK = probs_TE.gather(-1, idx_TK)
        w_TK = w_TK / w_TK.sum(-1, keepdim=True).clamp(min=self.norm_min)
        return w_TK.to(x_TD.dtype), idx_TK


def experts_reference(x_TD, idx_TK, w_TK, gate_up_E2FD, down_EDF):
    """transformers' eager loop: the numerical oracle for the other implementations."""
    out = torch.zeros_like(x_TD)
    for e in idx_TK.unique().tolist():
        tok, slot = torch.where(idx_TK == e)
        g, u = F.linear(x_TD[tok], gate_up_E2FD[e]).chunk(2, dim=-1)
        y = F.linear(F.silu(g) * u, down_EDF[e]) * w_TK[tok, slot, None]
        out.index_add_(0, tok, y.to(out.dtype))
    return out


def _can_grouped_mm(x: torch.Tensor, F_: int) -> bool:
    """Where `F.grouped_mm` applies: CUDA in bfloat16 (its kernels' dtype) with 16-byte aligned strides, and CPU in
    float32/bfloat16/float16 (any stride). On CPU its one native loop over the groups beats a Python loop of
    per-expert matmuls at every batch size measured, so the sliced loop is only the fallback elsewhere."""
    if x.is_cuda:
        es = x.element_size()
        return x.dtype == torch.bfloat16 and (x.shape[-1] * es) % 16 == 0 and (F_ * es) % 16 == 0
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16)


# the public name arrived after the private op; older torch builds have only `torch._grouped_mm`
_f_grouped_mm = getattr(F, "grouped_mm", None) or (lambda a, b, offs=None: torch._grouped_mm(a, b, offs=offs))


@torch.library.custom_op("ernie_vl::grouped_mm", mutates_args=())
def _grouped_mm_opaque(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """`F.grouped_mm` as an opaque op for torch.compile, whose shape rules for it only allow 16-bit inputs."""
    return _f_grouped_mm(a, b, offs=offs)


@_grouped_mm_opaque.register_fake
def _(a, b, offs):
    return a.new_empty(a.shape[0], b.shape[-1])


def _grouped_mm(a, b, offs):
    if torch.compiler.is_compiling() and a.dtype == torch.float32:
        return _grouped_mm_opaque(a, b, offs)
    return _f_grouped_mm(a, b, offs=offs)


def experts_grouped(x_TD, idx_TK, w_TK, gate_up_E2FD, down_EDF):
    T, D = x_TD.shape
    E, F2, _ = gate_up_E2FD.shape
    K = idx_TK.shape[1]
    flat_A = idx_TK.reshape(-1)
    order_A = flat_A.argsort(stable=True)
    tok_A = order_A // K
    xs_AD = x_TD[tok_A]
    counts_E = torch.zeros(E, dtype=torch.int32, device=x_TD.device).scatter_add_(
        0, flat_A.to(torch.int64), torch.ones_like(flat_A, dtype=torch.int32)
    )
    if _can_grouped_mm(x_TD, F2 // 2):
        offs_E = counts_E.cumsum(0, dtype=torch.int32)
        h_AF2 = _grouped_mm(xs_AD, gate_up_E2FD.transpose(1, 2), offs_E)
        g, u = h_AF2.chunk(2, dim=-1)
        ys_AD = _grouped_mm(F.silu(g) * u, down_EDF.transpose(1, 2), offs_E)
    else:
        ys_AD = torch.empty_like(xs_AD)
        start = 0
        for e, n in enumerate(counts_E.tolist()):
            if n:
                g, u = F.linear(xs_AD[start : start + n], gate_up_E2FD[e]).chunk(2, dim=-1)
                ys_AD[start : start + n] = F.linear(F.silu(g) * u, down_EDF[e])
            start += n
    ys_AD = ys_AD * w_TK.reshape(-1)[order_A, None]
    out = torch.zeros_like(x_TD)
    return out.index_add_(0, tok_A, ys_AD.to(out.dtype))


def experts(x_TD, idx_TK, w_TK, gate_up_E2FD, down_EDF):
    """The experts function (chosen with `set_experts_impl`): every token through its K experts, weighted and
    summed. Unsharded pools and the expert-parallel ranks' local experts both call it."""
    fn = experts_reference if _experts_impl == "reference" else experts_grouped
    return fn(x_TD, idx_TK, w_TK, gate_up_E2FD, down_EDF)


class Experts(nn.Module):
    def __init__(self, n_experts: int, hidden: int, inner: int):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(n_experts, 2 * inner, hidden))  # rows: gate then up
        self.down_proj = nn.Parameter(torch.empty(n_experts, hidden, inner))

    def forward(self, x_TD, idx_TK, w_TK):
        return experts(x_TD, idx_TK, w_TK, self.gate_up_proj, self.down_proj)


class ExpertPool(nn.Module):
    """One modality's router and experts (`text_moe` / `vision_moe`)."""

    def __init__(self, cfg, inner: int):
        super().__init__()
        self.gate = Router(cfg.hidden_size, cfg.moe_num_experts, cfg.moe_k, cfg.moe_norm_min)
        self.experts = Experts(cfg.moe_num_experts, cfg.hidden_size, inner)
        self.record: list | None = None  # set to a list to collect the chosen experts per call

    def forward(self, x_TD):
        w_TK, idx_TK = self.gate(x_TD)
        if self.record is not None:
            self.record.append(idx_TK)
        return self.experts(x_TD, idx_TK, w_TK)


class MoEBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.text_moe = ExpertPool(cfg, cfg.moe_intermediate_size[0])
        self.vision_moe = ExpertPool(cfg, cfg.moe_intermediate_size[1])
        self.shared_experts = (
            MLP(cfg.hidden_size, cfg.shared_intermediate_size, cfg.use_bias) if cfg.moe_num_shared_experts else None
        )

    def forward(self, x_BSD: torch.Tensor, route: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """`route`: (text, vision) flat token indices of the two pools, made on the host (`inputs.ModelBatch`); None:
        every token is text (decode). Both pools run in a prefill, empty or not (expert-parallel ranks rely on it)."""
        x_TD = x_BSD.reshape(-1, x_BSD.shape[-1])
        if route is None:
            out_TD = self.text_moe(x_TD)
        else:
            text_idx, vis_idx = route
            out_TD = torch.empty_like(x_TD)
            out_TD[text_idx] = self.text_moe(x_TD[text_idx])
            out_TD[vis_idx] = self.vision_moe(x_TD[vis_idx])
        out = out_TD.view_as(x_BSD)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x_BSD)
        return out
