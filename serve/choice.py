"""A request and its choices: each of the `n` choices is a row of the batch that turns its tokens into events.

`RequestJob` is what the HTTP route waits on: its prompt, its `n` `ChoiceRow`s and one asyncio queue of events. A
`ChoiceRow` is what the replica's queue and the continuous batch (or an expert-sharded gang's lane) hold: the
request's inputs, the choice's own `GenerationSettings` (a sampling choice gets its own seed) and `on_token`, called
from the decode thread for every new token. It detokenizes incrementally with stop strings (textstream.py), splits a
thinking model's output into reasoning and answer with the one rule (`ernie_vl.reasoning`) and, when asked, turns
each token's log-probabilities into OpenAI's entries. Events, per choice index `i`:

    ("delta", i, reasoning, content, logprobs)   streaming requests only: text safe to send, the entries of the
                                                  tokens it came from (or since the last event)
    ("done", i, finish_reason, n_tokens)         finish_reason "stop" | "length"
    ("error", exception)                         the batch failed
"""

from __future__ import annotations

import asyncio

from ernie_vl.generation import GenerationSettings
from ernie_vl.inputs import ModelInputs
from ernie_vl.reasoning import ReasoningStream, split_reasoning

from .textstream import TextStream


class TokenText:
    """Token id -> (text, UTF-8 bytes) for log-probability entries: a byte-fallback token (``<0xE3>``) is its one
    byte; any other token is its own decoding (special tokens included), as vLLM reports tokens."""

    def __init__(self, tokenizer, byte_ids: set[int]):
        self.tokenizer, self.byte_ids = tokenizer, byte_ids
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token: int) -> tuple[str, list[int]]:
        if token not in self._cache:
            text = self.tokenizer.decode([token])
            if token in self.byte_ids:
                raw = [int(self.tokenizer.convert_ids_to_tokens(token)[3:5], 16)]
            else:
                raw = list(text.encode("utf-8"))
            self._cache[token] = (text, raw)
        return self._cache[token]

    def entry(self, token: int, lp) -> dict:
        """OpenAI's `{token, logprob, bytes, top_logprobs}` for one generated token (`lp`: sampling.TokenLogprobs)."""
        text, raw = self(token)
        top = []
        for t, v in lp.top:
            tt, tb = self(t)
            top.append({"token": tt, "logprob": v, "bytes": tb})
        return {"token": text, "logprob": lp.logprob, "bytes": raw, "top_logprobs": top}


class ChoiceRow:
    """One choice of a request: a row of the batch (see the module docstring)."""

    def __init__(self, request: "RequestJob", index: int, settings: GenerationSettings, stream: TextStream):
        self.request, self.index, self.settings, self.stream = request, index, settings, stream
        self.inputs = request.inputs
        self.reasoning = ReasoningStream(request.thinking)
        self.logprobs: list[dict] | None = [] if settings.logprobs is not None else None
        self._unsent = 0  # logprob entries not yet sent with a delta
        self.reused_prompt_tokens = 0  # set on admission: prompt tokens taken from a stored or shared prefix
        self.enqueued_at = 0.0

    @property
    def cancelled(self) -> bool:
        return self.request.cancelled

    @property
    def prompt_tokens(self) -> int:
        return self.inputs.num_prompt_tokens

    def on_token(self, token: int, finish: str | None, logprobs=None) -> bool:
        """Called from the decode thread for each new token; returns True to stop this row."""
        req = self.request
        if req.cancelled:
            return True
        if logprobs is not None and self.logprobs is not None:
            self.logprobs.append(req.token_text.entry(token, logprobs))
        delta, stopped = self.stream.push(token)
        if stopped:
            finish = "stop"
        if finish is not None:
            delta += self.stream.finish()
        if req.want_deltas:
            reasoning, content = self.reasoning.feed(delta) if delta else ("", "")
            if finish is not None:
                more_r, more_c = self.reasoning.finish()
                reasoning, content = reasoning + more_r, content + more_c
            if reasoning or content or (finish is not None and self._pending()):
                req.put(("delta", self.index, reasoning, content, self._take_logprobs()))
        if finish is not None:
            req.put(("done", self.index, finish, len(self.stream.tokens)))
        return stopped

    def _pending(self) -> bool:
        return self.logprobs is not None and self._unsent < len(self.logprobs)

    def _take_logprobs(self) -> list[dict] | None:
        if self.logprobs is None:
            return None
        out, self._unsent = self.logprobs[self._unsent:], len(self.logprobs)
        return out

    def answer(self) -> tuple[str | None, str]:
        """(reasoning, content) of the whole generation (reasoning None when thinking is off)."""
        split = split_reasoning(self.stream.text, self.request.thinking)
        return split.reasoning, split.answer

    def fail(self, exc: BaseException) -> None:
        self.request.put(("error", exc))


class RequestJob:
    """One admitted request: what the route waits on (see the module docstring). `thinking`: the prompt ends in
    ``<think>`` (chat_template_kwargs.enable_thinking), so the output is split into reasoning and answer."""

    def __init__(self, inputs: ModelInputs, settings: list[GenerationSettings], make_stream, want_deltas: bool,
                 thinking: bool = False, token_text: TokenText | None = None):
        self.inputs = inputs
        self.want_deltas = want_deltas
        self.thinking = thinking
        self.token_text = token_text
        self.cancelled = False
        self.enqueued_at = 0.0
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.choices = [ChoiceRow(self, i, s, make_stream()) for i, s in enumerate(settings)]

    @property
    def prompt_tokens(self) -> int:
        return self.inputs.num_prompt_tokens

    @property
    def reused_prompt_tokens(self) -> int:
        """Prompt tokens of this request not computed for it (its first choice's; the others share its prompt)."""
        return self.choices[0].reused_prompt_tokens

    def put(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the replica is going away
            pass

    def fail(self, exc: BaseException) -> None:
        self.put(("error", exc))
