"""Reasoning ("thinking") output: split a generation into its reasoning and its final answer at the think markers.

With ``enable_thinking`` the chat template ends the prompt with ``<think>`` (model-spec §12.3), so a thinking model
writes ``reasoning \\n</think>\\n\\n answer``; the ERNIE tokenizer keeps ``<think>``/``</think>`` in decoded text (they
are not flagged special). The one rule, used by the batch job and the server alike:

* thinking on: text before the first ``</think>`` is the reasoning (a leading ``<think>`` the model wrote itself is
  dropped), text after it the answer; no ``</think>`` at all (the token budget ran out while reasoning) → everything
  is reasoning and the answer is empty.
* thinking off: the prompt already holds an empty ``<think>\\n\\n</think>`` block; the whole text is the answer and
  there is no reasoning.

Whitespace the template puts around the markers (``\\n`` before ``</think>``, ``\\n\\n`` after) is stripped from both
parts. :class:`ReasoningStream` applies the same rule to text arriving in pieces (a marker may be split between
pieces), for streamed responses.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_START, THINK_END = "<think>", "</think>"


@dataclass(frozen=True)
class Split:
    """One generation split: ``reasoning`` (None when thinking is off), ``answer``, and whether the reasoning was
    closed by ``</think>`` (False: the budget ended inside the reasoning, the answer is empty)."""

    reasoning: str | None
    answer: str
    closed: bool


def split_reasoning(text: str, thinking: bool) -> Split:
    """The reasoning/answer split of a whole generation (see the module docstring)."""
    if not thinking:
        return Split(None, text, True)
    body = text.lstrip()
    if body.startswith(THINK_START):
        body = body[len(THINK_START):]
    reasoning, marker, answer = body.partition(THINK_END)
    if not marker:
        return Split(reasoning.strip("\n"), "", False)
    return Split(reasoning.strip("\n"), answer.lstrip("\n"), True)


class ReasoningStream:
    """Incremental :func:`split_reasoning`: ``feed(piece) -> (reasoning delta, answer delta)``; the concatenated
    deltas equal the whole-text split (up to the whitespace at the part boundaries, trimmed the same way)."""

    def __init__(self, thinking: bool):
        self.thinking = thinking
        self._in_reasoning = thinking
        self._held = ""  # text that may be the start of a marker, or boundary whitespace
        self._opened = False  # the leading whitespace and <think> (if any) are behind us
        self._started = False  # something has been emitted in the current part

    def feed(self, piece: str) -> tuple[str, str]:
        if not self.thinking:
            return "", piece
        text, self._held = self._held + piece, ""
        reasoning = answer = ""
        if self._in_reasoning:
            if not self._started:
                if not self._opened:  # leading whitespace and a leading <think> go, as in the whole split
                    stripped = text.lstrip()
                    if THINK_START.startswith(stripped) and stripped != THINK_START:
                        self._held = text  # maybe a leading <think> still arriving
                        return "", ""
                    text = stripped[len(THINK_START):] if stripped.startswith(THINK_START) else stripped
                    self._opened = True
                text = text.lstrip("\n")
            before, marker, after = text.partition(THINK_END)
            if marker:
                reasoning = before.rstrip("\n")
                self._in_reasoning, self._started = False, False
                more_r, answer = self.feed(after)
                return reasoning + more_r, answer
            m = _marker_prefix_len(text)
            keep = m + _trailing_newlines(text[:len(text) - m])
            text, self._held = (text[:-keep], text[-keep:]) if keep else (text, "")
            self._started = self._started or bool(text)
            return text, ""
        if not self._started:
            text = text.lstrip("\n")
        self._started = self._started or bool(text)
        return "", text

    def finish(self) -> tuple[str, str]:
        """What is still held back at the end of the generation (trailing newlines are dropped, as in the split)."""
        held, self._held = self._held, ""
        if not self._in_reasoning:
            return "", ""
        if not self._started:  # leading whitespace, maybe a partial <think> or </think>: as the whole split
            return (held if self._opened else held.lstrip()).strip("\n"), ""
        return held.rstrip("\n"), ""


def _marker_prefix_len(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``</think>`` (it may complete later)."""
    for n in range(min(len(THINK_END) - 1, len(text)), 0, -1):
        if THINK_END.startswith(text[-n:]):
            return n
    return 0


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))
