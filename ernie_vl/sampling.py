"""Next-token choice: penalties, then greedy or sampling with transformers' warper order (temperature -> top-k ->
top-p), in float32, without host synchronisation; and the log-probabilities a caller may ask for.

Penalties (`penalize`, the one implementation; `slots.ContinuousBatch` applies it to every row that asks, in the
server, the batch engine and the expert-parallel ranks alike), in vLLM's order:
* repetition (CTRL, Keskar et al. 2019; transformers' `RepetitionPenaltyLogitsProcessor`, vLLM's
  `repetition_penalty`): the logit of every token seen in the prompt or the generated text is divided by the penalty
  when positive and multiplied by it otherwise;
* frequency and presence (OpenAI): ``logit -= frequency * count + presence * (count > 0)`` with ``count`` the
  token's occurrences in the generated text (not the prompt).
Log-probabilities (`token_logprobs`) are those of the model's own distribution (log-softmax of the raw logits, before
penalties and temperature), as vLLM reports them by default. Legend: B rows, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sample_next(
    logits_BV: torch.Tensor,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    logits = logits_BV.float()
    if not do_sample or temperature == 0:
        return logits.argmax(-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove_sorted = cum <= (1 - top_p)
        remove_sorted[..., -1:] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def penalize(logits_BV: torch.Tensor, counts_BV: torch.Tensor, in_prompt_BV: torch.Tensor, presence: float = 0.0,
             frequency: float = 0.0, repetition: float = 1.0) -> torch.Tensor:
    """Penalized float32 logits. `counts_BV`: occurrences of each token in the generated text so far; `in_prompt_BV`:
    whether each token occurs in the prompt (bool)."""
    logits = logits_BV.float()
    generated = counts_BV > 0
    if repetition != 1.0:
        seen = in_prompt_BV | generated
        logits = torch.where(seen, torch.where(logits > 0, logits / repetition, logits * repetition), logits)
    if frequency != 0.0:
        logits = logits - frequency * counts_BV.float()
    if presence != 0.0:
        logits = logits - presence * generated.float()
    return logits


class TokenCounts:
    """What the penalties of one row need, kept on the device and updated without a host read: its prompt's tokens
    (`in_prompt_V`) and the count of each token generated so far (`counts_V`)."""

    def __init__(self, prompt_ids: torch.Tensor, vocab: int, device):
        self.in_prompt_V = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.in_prompt_V[prompt_ids.to(device).clamp(0, vocab - 1)] = True
        self.counts_V = torch.zeros(vocab, dtype=torch.float32, device=device)
        self._one = torch.ones(1, dtype=torch.float32, device=device)

    def penalize(self, logits_1V: torch.Tensor, settings) -> torch.Tensor:
        return penalize(logits_1V, self.counts_V[None], self.in_prompt_V[None], settings.presence_penalty,
                        settings.frequency_penalty, settings.repetition_penalty)

    def add(self, token_1: torch.Tensor) -> None:
        """Count the chosen token (a 1-element device tensor)."""
        self.counts_V.index_put_((token_1,), self._one, accumulate=True)


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token's log-probability and the `k` most likely tokens at its step, as (token id, logprob)."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprobs(logits_BV: torch.Tensor, chosen_B: torch.Tensor, k: int) -> list[TokenLogprobs]:
    """Log-probabilities of the chosen tokens and each row's `k` most likely tokens (one host read)."""
    lp = logits_BV.float().log_softmax(-1)
    chosen = lp.gather(1, chosen_B.reshape(-1, 1))[:, 0]
    if k <= 0:
        return [TokenLogprobs(v) for v in chosen.tolist()]
    top = lp.topk(min(k, lp.shape[-1]), dim=-1)
    vals, ids = torch.cat([chosen[:, None], top.values], 1).tolist(), top.indices.tolist()
    return [TokenLogprobs(v[0], tuple(zip(i, v[1:]))) for v, i in zip(vals, ids)]
