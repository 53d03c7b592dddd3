"""Generation settings: the one type that the engine, the continuous batch, the batch pipeline, the server and the
expert-parallel gang all use, with the checkpoint's defaults (generation_config.json, else config.json).

A request's settings are the checkpoint's defaults with what the caller asked for replaced
(`GenerationSettings.from_checkpoint(path).replace(max_new_tokens=64)`); every row of a continuous batch carries its
own, so concurrent requests may ask for different things.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 32
    do_sample: bool = False  # sampling happens only with do_sample and temperature > 0 (`samples`)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0  # a sampling row's own torch.Generator is seeded with it: same seed, same tokens
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int = 0  # fills padded prompt positions (masked: it changes no result)
    # Penalties (`sampling.penalize`), applied before temperature/top-k/top-p and before a greedy choice:
    # OpenAI's presence/frequency penalties over the generated tokens, and the CTRL repetition penalty
    # (transformers' RepetitionPenaltyLogitsProcessor, vLLM's repetition_penalty) over prompt and generated tokens.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # None: none; k >= 0: each token's log-probability and the k most likely tokens'
    # A reasoning row's answer budget: it ends ("length") `max_answer_tokens` tokens after it generates
    # `think_end_token_id` (`</think>`); the reasoning before it is bounded by `max_new_tokens` only.
    max_answer_tokens: int | None = None
    think_end_token_id: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError(f"logprobs must be None or >= 0, got {self.logprobs}")
        if self.max_answer_tokens is not None and (self.max_answer_tokens < 0 or self.think_end_token_id is None):
            raise ValueError(f"max_answer_tokens must be >= 0 and needs think_end_token_id, got "
                             f"{self.max_answer_tokens} and {self.think_end_token_id}")
        object.__setattr__(self, "eos_token_id", tuple(int(e) for e in self.eos_token_id))

    @property
    def samples(self) -> bool:
        return self.do_sample and self.temperature > 0

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1

    def replace(self, **changes: Any) -> "GenerationSettings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_checkpoint(cls, path, model_config=None, **changes: Any) -> "GenerationSettings":
        """The checkpoint folder's defaults — EOS and pad ids, do_sample/temperature/top_p/top_k from
        generation_config.json, EOS/pad from the model config where that file has none — then `changes`."""
        gen = _read(Path(path) / "generation_config.json") if path is not None else {}
        text = getattr(model_config, "text", None)
        eos = gen.get("eos_token_id")
        if eos is None and text is not None:
            eos = getattr(text, "eos_token_id", None)
        pad = gen.get("pad_token_id")
        if pad is None and text is not None:
            pad = getattr(text, "pad_token_id", None)
        base = cls(
            do_sample=bool(gen.get("do_sample", False)),
            temperature=float(gen.get("temperature", 1.0) or 1.0),
            top_p=float(gen.get("top_p", 1.0) or 1.0),
            top_k=int(gen.get("top_k", 0) or 0),
            eos_token_id=tuple(_ids(eos)),
            pad_token_id=0 if pad is None else int(pad),
        )
        return base.replace(**changes) if changes else base


@dataclass
class Generated:
    tokens: list[int]  # new tokens, EOS included if produced
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    latency_s: float
    reused_prompt_tokens: int = 0  # prompt tokens prefilled once for several requests and not again for this one
    reused_media: int = 0  # images/videos whose features were not encoded for this request
    logprobs: list | None = None  # per token a `sampling.TokenLogprobs`, when the settings asked for them


def finish_reason(token: int, n_tokens: int, settings: GenerationSettings, answer_tokens: int | None = None
                  ) -> str | None:
    """Why a row ends with this token, its `n_tokens`-th: "stop" (EOS), "length" (budget spent: `max_new_tokens`, or
    `max_answer_tokens` with `answer_tokens` generated after `</think>`, None before it) or None."""
    if token in settings.eos_token_id:
        return "stop"
    if n_tokens >= settings.max_new_tokens:
        return "length"
    capped = answer_tokens is not None and settings.max_answer_tokens is not None
    return "length" if capped and answer_tokens >= settings.max_answer_tokens else None


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(e) for e in (value if isinstance(value, (list, tuple)) else [value])]


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
