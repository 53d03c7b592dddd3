"""Shared prompt prefixes: which requests of a prefill start with the same tokens and the same media, and how far.

A prefix is shared when the token ids agree and every medium inside it has the same content key (equal placeholder
ids alone say nothing about the pixels). It never ends inside a medium's placeholder run, and it leaves each request
at least one token of its own (the prefill's last token gives the first new token). `ContinuousBatch.admit` prefills
such a prefix once and gives each request its keys and values (see `slots`).
"""

from __future__ import annotations


from .inputs import ModelInputs


def shared_prefix(a: ModelInputs, b: ModelInputs) -> int:
    """Tokens at the start of `a` and `b` that a prefill can share."""
    n = min(a.num_prompt_tokens, b.num_prompt_tokens) - 1
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



