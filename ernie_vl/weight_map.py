"""The checkpoint key map: one table from our (fused Hugging Face) tensor names to the tensors of each on-disk layout.

Each `Rule` says, for one HF-layout name pattern:
* `sources` — the on-disk tensors it is built from (`Part`s: a whole tensor, or one row of a stacked one);
* `forward` — source tensors -> our tensor;  `inverse` — our tensor -> one tensor per source (same order);
* `shape`   — our shape from the source shapes, so a checkpoint is checked from file headers alone.
Rules with `per_expert` describe one expert `e` of a stacked `[E, ...]` tensor; the reader stacks them, which lets an
expert-parallel rank read only its own experts. Loading, the shape check, per-rank expert loading
(`weights.iter_hf_tensors`) and `ernie-vl convert` (`to_original` here) all read these tables and nothing else.

Layouts (model-spec §3.2, mirroring the "ernie4_5_vl_moe" entry of transformers' conversion mapping):
* `HF_RULES` — the fused layout (`save_pretrained(save_original_format=False)`): names are ours; only stacked experts
  get a rule (row `e` of the stored tensor), so a rank can read rows.
* `ORIGINAL_RULES` — the hub layout: per-expert 2-D weights numbered 0..2E-1 (first E = text), routers stored
  transposed as `mlp.gate.weight` / `mlp.gate.weight_1`, one `[2, E]` correction bias (row 0 text, row 1 vision),
  `vision_model.` (or `model.vision_model.`) prefix, resampler MLPs as `.0/.2/.3`, text under `model.`.

Legend: E experts per pool, D hidden size, F expert FFN width.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


class CheckpointError(ValueError):
    """A checkpoint folder that does not hold the tensors this config needs."""


def keep_float32(name: str) -> bool:
    """Whether a parameter stays float32 whatever the model dtype: router weights and their correction biases.

    Mirrors transformers' `_keep_in_fp32_modules_strict = ["gate.weight", "moe_statics"]`; true for names of either
    layout (`...text_moe.gate.weight`, `...mlp.gate.weight_1`, `...moe_statics.e_score_correction_bias`)."""
    return ".gate." in name or "moe_statics" in name


@dataclass(frozen=True)
class Part:
    """One on-disk source tensor: the whole of `key`, or row `row` of `key` when it stacks `rows` tensors."""

    key: str
    row: int | None = None
    rows: int = 1


@dataclass(frozen=True)
class Names:
    """What a layout's names depend on besides the HF name: E, and the vision prefix the folder uses."""

    n_experts: int  # per pool; the original layout numbers text experts 0..E-1 and vision experts E..2E-1
    vision_prefix: str = "vision_model."  # or "model.vision_model." (transformers' save_original_format=True)


def _first(ts: list[Tensor]) -> Tensor:
    return ts[0]


def _single(t: Tensor) -> list[Tensor]:
    return [t]


def _same_shape(shapes: list[list[int]]) -> list[int] | None:
    return shapes[0]


@dataclass(frozen=True)
class Rule:
    """HF name pattern -> sources, forward and inverse transform, shape rule (see the module docstring).

    `sources(match, names)` (or `sources(match, names, e)` when `per_expert`) lists the `Part`s. `optional`: a
    checkpoint may lack the sources; the tensor is then zeros, as the reference initialises it."""

    pattern: str
    sources: Callable[..., list[Part]]
    forward: Callable[[list[Tensor]], Tensor] = _first
    inverse: Callable[[Tensor], list[Tensor]] = _single
    shape: Callable[[list[list[int]]], list[int] | None] = _same_shape
    per_expert: bool = False
    optional: bool = False
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def parts(self, m: re.Match, names: Names, experts: Sequence[int] | None = None) -> list[list[Part]]:
        """Sources grouped per expert (`experts`, default all) for `per_expert` rules; one group otherwise."""
        if not self.per_expert:
            return [self.sources(m, names)]
        return [self.sources(m, names, e) for e in (range(names.n_experts) if experts is None else experts)]

    def build(self, groups: list[list[Tensor]]) -> Tensor:
        """Our tensor from the source tensors of `parts` (per-expert results stacked on a new dim 0)."""
        if not self.per_expert:
            return self.forward(groups[0])
        first = self.forward(groups[0])
        out_ND = first.new_empty(len(groups), *first.shape)  # filled expert by expert: one expert of scratch
        out_ND[0] = first
        for i, g in enumerate(groups[1:], start=1):
            out_ND[i] = self.forward(g)
        return out_ND

    def split(self, t: Tensor) -> list[list[Tensor]]:
        """The inverse of `build`: source tensors grouped as `parts` groups them."""
        if not self.per_expert:
            return [self.inverse(t)]
        return [self.inverse(t[e]) for e in range(t.shape[0])]

    def full_shape(self, shapes: list[list[list[int]]]) -> list[int] | None:
        """Our shape from the shapes of the `parts` groups; None when the sources disagree with each other."""
        if not self.per_expert:
            return self.shape(shapes[0])
        each = [self.shape(s) for s in shapes]  # one per expert: all experts must agree
        if any(s is None or s != each[0] for s in each):
            return None
        return [len(each), *each[0]]


# ------------------------------------------------------------------------------------------------- the tables
_POOL = r"model\.language_model\.layers\.(?P<layer>\d+)\.mlp\.(?P<pool>text|vision)_moe\."
_RESAMPLER_INDEX = {"fc1": 0, "fc2": 2, "ln": 3}  # nn.Sequential(Linear, GELU, Linear, LayerNorm) in the original


def _mlp(m: re.Match) -> str:
    return f"model.layers.{m['layer']}.mlp"


def _orig_expert(m: re.Match, names: Names, e: int) -> str:
    return f"{_mlp(m)}.experts.{e + (0 if m['pool'] == 'text' else names.n_experts)}"


def _transpose(t: Tensor) -> Tensor:
    return t.t().contiguous()


def _gate_up_shape(shapes: list[list[int]]) -> list[int] | None:
    gate_FD, up_FD = shapes
    return [2 * gate_FD[0], gate_FD[1]] if gate_FD == up_FD else None


ORIGINAL_RULES: tuple[Rule, ...] = (
    Rule(r"model\.vision_tower\.(?P<rest>.+)", lambda m, n: [Part(n.vision_prefix + m["rest"])]),
    Rule(r"model\.resampler_model\.(?P<seq>spatial|temporal)_linear\.(?P<mod>fc1|fc2|ln)\.(?P<rest>.+)",
         lambda m, n: [Part(f"model.resampler_model.{m['seq']}_linear.{_RESAMPLER_INDEX[m['mod']]}.{m['rest']}")]),
    Rule(r"model\.resampler_model\..+", lambda m, n: [Part(m[0])]),
    # router [E, D] <- [D, E] (Paddle stores Linear weights as [in, out]); the vision router is `weight_1`
    Rule(_POOL + r"gate\.weight",
         lambda m, n: [Part(f"{_mlp(m)}.gate.weight" + ("" if m["pool"] == "text" else "_1"))],
         forward=lambda ts: _transpose(ts[0]), inverse=lambda t: [_transpose(t)], shape=lambda s: s[0][::-1]),
    # correction bias [1, E] <- row 0 (text) / 1 (vision) of one [2, E] tensor
    Rule(_POOL + r"gate\.moe_statics\.e_score_correction_bias",
         lambda m, n: [Part(f"{_mlp(m)}.moe_statics.e_score_correction_bias", row=int(m["pool"] == "vision"), rows=2)],
         forward=lambda ts: ts[0][None].clone(), inverse=lambda t: [t[0]], shape=lambda s: [1, *s[0]], optional=True),
    # expert e of gate_up_proj [E, 2F, D] <- gate_proj [F, D] then up_proj [F, D] of expert e (+E for vision)
    Rule(_POOL + r"experts\.gate_up_proj",
         lambda m, n, e: [Part(f"{_orig_expert(m, n, e)}.{p}.weight") for p in ("gate_proj", "up_proj")],
         forward=lambda ts: torch.cat(ts, dim=0), inverse=lambda t_2FD: list(t_2FD.chunk(2, dim=0)),
         shape=_gate_up_shape, per_expert=True),
    # expert e of down_proj [E, D, F] <- down_proj [D, F] of expert e (+E for vision)
    Rule(_POOL + r"experts\.down_proj", lambda m, n, e: [Part(f"{_orig_expert(m, n, e)}.down_proj.weight")],
         per_expert=True),
    Rule(r"model\.language_model\.(?P<rest>.+)", lambda m, n: [Part(f"model.{m['rest']}")]),
    Rule(r"lm_head\.weight", lambda m, n: [Part(m[0])]),
)

HF_RULES: tuple[Rule, ...] = (
    Rule(_POOL + r"experts\.(gate_up|down)_proj", lambda m, n, e: [Part(m[0], row=e, rows=n.n_experts)],
         per_expert=True),
    Rule(r".+", lambda m, n: [Part(m[0])]),
)

TABLES = {"original": ORIGINAL_RULES, "hf": HF_RULES}


def lookup(layout: str, key: str) -> tuple[Rule, re.Match]:
    """The first rule of `layout` whose pattern matches all of HF name `key`."""
    for rule in TABLES[layout]:
        m = rule.regex.fullmatch(key)
        if m:
            return rule, m
    raise KeyError(f"no {layout}-layout rule for {key!r}")


def pool_of(m: re.Match) -> str | None:
    """The pool ("text" or "vision") of a rule matched on a pool's tensor, else None."""
    return m.groupdict().get("pool")


# ------------------------------------------------------------------------------------------------ HF -> original
def to_original(items: Iterator[tuple[str, Tensor]], n_experts: int) -> Iterator[tuple[str, Tensor]]:
    """Turn a stream of HF-layout tensors into original-layout tensors through `ORIGINAL_RULES`' inverses.

    A source that stacks rows of several HF tensors (the `[2, E]` bias) is written once all its rows have come."""
    names = Names(n_experts)
    pending: dict[str, dict[int, Tensor]] = {}
    for key, t in items:
        rule, m = lookup("original", key)
        for parts, pieces in zip(rule.parts(m, names), rule.split(t), strict=True):
            for part, piece in zip(parts, pieces, strict=True):
                if part.row is None:
                    yield part.key, piece.contiguous()
                    continue
                rows = pending.setdefault(part.key, {})
                rows[part.row] = piece
                if len(rows) == part.rows:
                    yield part.key, torch.stack([rows[r] for r in range(part.rows)])
                    del pending[part.key]
    if pending:
        raise CheckpointError(f"tensors missing some of their rows (e.g. the correction bias of one pool): "
                              f"{ {k: sorted(v) for k, v in sorted(pending.items())} }")
