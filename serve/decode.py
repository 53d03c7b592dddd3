"""Step-wise batched generation with per-request settings and a per-token callback (for streaming).

This is `ernie_vl.engine.Engine._generate_batch` with two differences the server needs: every row carries its own
settings (max_new_tokens, sampling parameters, seed: concurrent requests ask for different things) and each new
token is handed to a callback as soon as it exists, which may also stop the row (a stop string matched, the client
went away). Everything else is the engine's code path: `ernie_vl.engine.collate` left-pads the batch, one prefill
with `logits_to_keep=1`, explicit next positions from the prefill's `position_ids`, `ernie_vl.sampling.sample_next`
for the next token, finished rows dropped from the KV cache. For greedy settings the tokens therefore equal
`Engine.generate` on the same `Prepared` requests (tests/test_serve_units.py pins this, early stops included).

Sampling rows use their own `torch.Generator` seeded with the request's seed, so a seeded request gives the same
answer whatever else shares its batch (the batch engine seeds one generator per batch instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ernie_vl.engine import Prepared, collate
from ernie_vl.sampling import sample_next

# (row, token, finish) -> True to stop the row now. `finish` is "stop" (EOS), "length" (budget spent) or None.
TokenCallback = Callable[[int, int, "str | None"], bool]


@dataclass
class RowParams:
    """Generation settings of one request."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


def _next_tokens(logits_BV: torch.Tensor, params: list[RowParams], gens: list[torch.Generator | None]) -> torch.Tensor:
    """One next token per live row. Greedy rows share one argmax; sampling rows draw from their own generator."""
    nxt = sample_next(logits_BV)  # greedy for every row (what sample_next does with do_sample=False)
    for j, (p, g) in enumerate(zip(params, gens)):
        if p.do_sample and p.temperature > 0:
            nxt[j] = sample_next(logits_BV[j:j + 1], True, p.temperature, p.top_k, p.top_p, g)[0]
    return nxt


@torch.inference_mode()
def decode_batch(
    model,
    batch: list[Prepared],
    params: list[RowParams],
    eos_token_ids: list[int],
    on_token: TokenCallback,
    pad_token_id: int = 0,
) -> None:
    """Generate for `batch`, calling `on_token(row, token, finish)` for every new token of every row."""
    if len(batch) != len(params):
        raise ValueError(f"{len(batch)} requests but {len(params)} settings")
    if not batch:
        return
    inputs = collate(batch, pad_token_id)
    B, S = inputs["input_ids"].shape
    budget = [p.max_new_tokens for p in params]
    cache = model.new_cache(B, S + max(budget))
    out = model(**inputs, cache=cache, logits_to_keep=1)
    next_pos = out.position_ids[:, :, -1:] + 1
    mask = inputs["attention_mask"].to(model.device)
    logits = out.logits[:, -1]
    gens = [torch.Generator(device=model.device).manual_seed(p.seed) if p.do_sample else None for p in params]
    eos = set(int(e) for e in eos_token_ids)
    alive = list(range(B))  # original row of each live batch row
    counts = [0] * B
    while True:
        nxt = _next_tokens(logits, [params[r] for r in alive], [gens[r] for r in alive])
        keep = []
        for j, (r, tok) in enumerate(zip(alive, nxt.tolist())):
            counts[r] += 1
            finish = "stop" if tok in eos else ("length" if counts[r] >= budget[r] else None)
            halted = on_token(r, tok, finish)
            if finish is None and not halted:
                keep.append(j)
        if not keep:
            return
        if len(keep) < len(alive):  # drop finished rows: later steps only pay for live sequences
            rows = torch.tensor(keep, device=model.device)
            cache.select_rows(rows)
            mask, next_pos, nxt = mask[rows], next_pos[:, rows], nxt[rows]
            alive = [alive[j] for j in keep]
        mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=mask.dtype, device=mask.device)], dim=1)
        out = model(nxt[:, None], mask, position_ids=next_pos, cache=cache)
        next_pos = next_pos + 1
        logits = out.logits[:, -1]
