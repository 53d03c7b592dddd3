"""Supervised fine-tuning on (prompt, answer) pairs: the loop that trains the embedded demo checkpoint.

A training item is a prompt exactly as generation sees it (`ModelInputs` from `Processor.prepare`: chat template,
media, 3-D positions) followed by the answer's token ids (the text the chat template writes after ``Assistant:``,
closed by ``<|end_of_sentence|>``, an EOS of the checkpoint). The loss is the cross-entropy of the answer tokens only,
each predicted from the tokens before it — what greedy decoding then reproduces.

The model's own prefill is the forward pass (the serving path, no second implementation): batches are left-padded
with `ModelBatch.collate` and only the last positions' logits are computed. Items are batched by similar length
(image prompts and video prompts apart) so padding stays small. Everything is seeded (weights, questions, batch
order); a rerun reproduces a run's quality, not necessarily its bits (two identical CPU runs here agreed to 4
digits of the loss for 250 steps, then drifted apart: float sums in CPU kernels are not bit-stable).

Legend: B batch, S padded sequence, N answer positions kept, V vocabulary.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .inputs import MediaTokens, ModelBatch, ModelInputs


@dataclass
class TrainItem:
    """One training sequence: `inputs` holds prompt + answer; the last `answer_len` tokens are the target."""

    inputs: ModelInputs
    answer_len: int

    @property
    def length(self) -> int:
        return self.inputs.num_prompt_tokens


@dataclass
class TrainSettings:
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 50
    min_lr_ratio: float = 0.05  # cosine decay to this share of lr
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def with_answer(prompt: ModelInputs, answer_ids: Sequence[int], tokens: MediaTokens) -> TrainItem:
    """The prompt followed by `answer_ids` (positions continue after the prompt, as in generation)."""
    if not answer_ids:
        raise ValueError("an answer needs at least one token")
    ids = torch.cat([prompt.input_ids, torch.as_tensor(list(answer_ids), dtype=torch.long)])
    im, vid = prompt.images, prompt.videos
    full = ModelInputs.build(ids, tokens, im.pixels if im else None, im.grid_thw if im else None,
                             vid.pixels if vid else None, vid.grid_thw if vid else None)
    return TrainItem(full, len(answer_ids))


def answer_loss(model, items: Sequence[TrainItem], pad_token_id: int = 0) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens of `items` (one left-padded batch through the model's prefill)."""
    batch = ModelBatch.collate([it.inputs for it in items], pad_token_id)
    B, S = batch.shape
    N = max(it.answer_len for it in items)
    logits_BNV = model.prefill(batch, logits_to_keep=N + 1).logits[:, :-1].float()  # position S-N-1+j predicts S-N+j
    target_BN = torch.full((B, N), -100, dtype=torch.long)
    for b, it in enumerate(items):
        target_BN[b, N - it.answer_len:] = it.inputs.input_ids[-it.answer_len:]
    return F.cross_entropy(logits_BNV.reshape(B * N, -1), target_BN.to(logits_BNV.device).reshape(-1))


def batches(items: Sequence[TrainItem], batch_size: int, g: torch.Generator, bucket: Callable[[TrainItem], int]):
    """Endless batches: items shuffled each epoch within buckets (`bucket(item)`: e.g. image vs video prompts), cut
    into batches, and the batches of all buckets shuffled together."""
    groups: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(bucket(it), []).append(i)
    while True:
        epoch = []
        for key in sorted(groups):
            idx = groups[key]
            order = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            epoch += [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        for j in torch.randperm(len(epoch), generator=g).tolist():
            yield [items[i] for i in epoch[j]]


def train(model, items: Sequence[TrainItem], settings: TrainSettings, *, pad_token_id: int = 0,
          bucket: Callable[[TrainItem], int] | None = None, log: Callable[[str], None] | None = print,
          log_every: int = 50) -> list[float]:
    """Train `model` in place (AdamW, linear warm-up then cosine decay, gradient clipping); returns the loss of
    every step. `bucket`: batches only hold items of one bucket (default: prompts of similar length)."""
    if not items:
        raise ValueError("no training items")
    torch.manual_seed(settings.seed)
    g = torch.Generator().manual_seed(settings.seed)
    params = [p for p in model.parameters() if p.dtype.is_floating_point]
    frozen = {id(p) for name, p in model.named_parameters() if name.endswith("e_score_correction_bias")}
    params = [p for p in params if id(p) not in frozen]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.95))
    model.train()
    bucket = bucket or (lambda it: it.length // 256)
    stream = batches(items, settings.batch_size, g, bucket)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(settings.steps):
        for group in opt.param_groups:
            group["lr"] = settings.lr_at(step)
        loss = answer_loss(model, next(stream), pad_token_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.clip)
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and ((step + 1) % log_every == 0 or step + 1 == settings.steps):
            recent = losses[-log_every:]
            log(f"step {step + 1}/{settings.steps} loss {sum(recent) / len(recent):.4f} "
                f"lr {settings.lr_at(step):.2e} {time.perf_counter() - t0:.0f}s")
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return losses
