"""Shared prompt prefixes: which requests start with the same tokens and the same media, and how far; and a bounded
cache of the keys and values of earlier prompts, so a later request (a second question on the same image, the next
turn of a chat, a repeated system prompt) continues from them.

A prefix is shared when the token ids agree and every medium inside it has the same content key (equal placeholder
ids alone say nothing about the pixels). It never ends inside a medium's placeholder run, and it leaves each request
at least one token of its own (the prefill's last token gives the first new token). `ContinuousBatch.admit` prefills
such a prefix once and gives each request its keys and values (see `slots`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .byte_lru import ByteLRU, tensor_bytes
from .inputs import ModelInputs


def shared_prefix(a, b, a_is_stored: bool = False) -> int:
    """Tokens at the start of `a` and `b` (`ModelInputs`, or `PromptKey`s) that a prefill can share. Each keeps a
    token of its own, except a stored prompt `a` (`a_is_stored`), whose whole prompt may be the prefix."""
    n = min(a.num_prompt_tokens + (1 if a_is_stored else 0), b.num_prompt_tokens) - 1
    if n <= 0:
        return 0
    differ = (a.input_ids[:n] != b.input_ids[:n]).nonzero()
    p = int(differ[0]) if differ.numel() else n
    for (s, e, ka), (_, _, kb) in zip(a.media_bounds(), b.media_bounds()):
        if s >= p:
            break
        if e > p or ka != kb:  # a medium cut by the prefix, or other pixels behind the same placeholders
            return s
    return p


def group_by_prefix(items: list[ModelInputs], min_tokens: int) -> list[tuple[int, list[int]]]:
    """Requests as groups `(shared prefix length, indices)`, in order of their first member: consecutive runs of
    requests sharing at least `min_tokens` with the run's first one; a request sharing nothing forms a group of one
    with prefix 0."""
    groups: list[tuple[int, list[int]]] = []
    for i, x in enumerate(items):
        if groups and groups[-1][1]:
            p, members = groups[-1]
            shared = shared_prefix(items[members[0]], x)
            if shared >= min_tokens:
                groups[-1] = (min(p, shared) if len(members) > 1 else shared, members + [i])
                continue
        groups.append((0, [i]))
    return groups


def prefix_signature(x: ModelInputs, n: int = 16) -> tuple:
    """A sort key that puts requests likely to share a prefix next to each other: the first medium's key and the
    first `n` token ids."""
    bounds = x.media_bounds()
    return (bounds[0][2] if bounds else "", tuple(x.input_ids[:n].tolist()))


@dataclass
class PromptKey:
    """What identifies a prompt's prefix: its token ids and its media (start, end, content key), without pixels."""

    input_ids: torch.Tensor
    bounds: list

    @classmethod
    def of(cls, x: ModelInputs) -> "PromptKey":
        return cls(x.input_ids, x.media_bounds())

    @property
    def num_prompt_tokens(self) -> int:
        return int(self.input_ids.numel())

    def media_bounds(self) -> list:
        return self.bounds

    def digest(self) -> str:
        data = self.input_ids.cpu().numpy().tobytes() + repr(self.bounds).encode()
        return hashlib.blake2b(data, digest_size=16).hexdigest()


class PrefixCache(ByteLRU):
    """Keys and values of earlier prompts (one `KVCache` row each) under their `PromptKey`, bounded in bytes and
    entries (`ByteLRU`). `lookup` finds the entry sharing the longest prefix with a new prompt."""

    def __init__(self, max_bytes: int = 1 << 30, max_entries: int = 256):
        super().__init__(max_bytes, max_entries)

    def lookup(self, x: ModelInputs, min_tokens: int):
        """(shared tokens, the entry's KVCache) for the longest match of at least `min_tokens`, else (0, None)."""
        best, found = 0, None
        for key, (prompt, _) in self.items():
            p = shared_prefix(prompt, x, a_is_stored=True)
            if p > best:
                best, found = p, key
        if found is None or best < min_tokens:
            return 0, None
        return best, self.get(found)[1]

    def store(self, x: ModelInputs, kv) -> None:
        """Keep `kv` (a one-row KVCache holding `x`'s prompt) for later prompts; an equal prompt replaces its entry."""
        prompt = PromptKey.of(x)
        self.put(prompt.digest(), (prompt, kv), tensor_bytes(kv.k_LBGCD, kv.v_LBGCD))
