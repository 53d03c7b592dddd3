"""Incremental detokenization with stop strings: tokens in, safe text deltas out.

The text of a request is always `decode(all tokens so far)` — the same call the batch pipeline makes once at the
end (`processor.batch_decode(..., skip_special_tokens=True)`), so the joined deltas equal the batch answer.
A delta is held back while it could still change:
- while the sequence ends in a run of byte-fallback tokens (``<0xE3>``...): the ByteFallback decoder turns a whole
  run that is not valid UTF-8 into one U+FFFD per byte, so a later byte can rewrite characters already decoded
  (``<0x03>`` alone is "\x03", followed by ``<0xE3>`` both become "\ufffd"); tokens that decode to nothing on
  their own (special tokens that `skip_special_tokens` drops) do not end such a run: the bytes on both sides of one
  are decoded as one run;
- while the text ends in U+FFFD (a multi-byte character split across byte-level tokens);
- while the text ends in a prefix of a stop string (the stop string may be completing).
Once a stop string appears, the text is cut before it and the row stops (OpenAI semantics: the stop string itself is
not returned). At the end, `finish` releases what was held back, so the joined deltas always equal `text`.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def byte_fallback_ids(vocab: dict[str, int]) -> set[int]:
    """Ids of the ``<0xNN>`` byte-fallback tokens of a vocabulary (token -> id)."""
    return {i for tok, i in vocab.items() if _BYTE_TOKEN.fullmatch(tok)}


class TextStream:
    """Accumulates one request's tokens; `push` returns (new text that is safe to send, stop string hit)."""

    def __init__(self, decode: Callable[[list[int]], str], stop: list[str] | None = None,
                 byte_ids: Iterable[int] = ()):
        self._decode = decode
        self._byte_ids = frozenset(byte_ids)
        self.stop = [s for s in (stop or []) if s]
        self.tokens: list[int] = []
        self.text = ""  # everything decoded so far (cut at the stop string once one matched)
        self.sent = 0  # characters of `text` already handed out
        self.stopped = False
        self._silent: dict[int, bool] = {}  # token id -> decodes to nothing on its own

    def push(self, token: int) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self.tokens.append(token)
        self.text = self._decode(self.tokens)
        if self.stop:
            cut = min((i for i in (self.text.find(s, max(0, self.sent - len(s))) for s in self.stop) if i >= 0),
                      default=-1)
            if cut >= 0:
                self.text = self.text[:cut]
                self.stopped = True
                return self._take(len(self.text)), True
        stable = len(self.tokens)
        while stable and (self.tokens[stable - 1] in self._byte_ids or self._is_silent(self.tokens[stable - 1])):
            stable -= 1
        settled = self.text if stable == len(self.tokens) else self._decode(self.tokens[:stable])
        if not self.text.startswith(settled):  # a decoder that rewrites earlier text: wait for the end
            settled = ""
        safe = len(settled.rstrip("\ufffd"))
        safe -= self._stop_prefix_len(self.text[:safe])
        return self._take(safe), False

    def _is_silent(self, token: int) -> bool:
        if token not in self._silent:
            self._silent[token] = self._decode([token]) == ""
        return self._silent[token]

    def finish(self) -> str:
        """The held-back remainder, once no more tokens will come."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.sent:
            return ""
        out, self.sent = self.text[self.sent:end], end
        return out

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
