"""The continuous batch (`ernie_vl.slots.ContinuousBatch`) as the server drives it: rows join between steps, each with
its own settings, and give the batch engine's tokens; plus its bookkeeping (admission bounds, release when idle)."""

import torch

from model_support import requests_for, rotations_for


class _Row:
    def __init__(self, inputs, settings):
        self.inputs, self.settings, self.tokens, self.finish = inputs, settings, [], None

    def on_token(self, tok, finish):
        self.tokens.append(tok)
        self.finish = finish
        return False


def _decode(model, reqs, params, max_slots=32, arrive_every=0, min_prefix=0):
    """Drive the server's continuous batch like the decode thread; with `arrive_every` k, request i arrives at
    step i*k."""
    from ernie_vl.slots import ContinuousBatch

    dec = ContinuousBatch(model, max_slots=max_slots, min_prefix=min_prefix)
    rows = [_Row(r, p) for r, p in zip(reqs, params)]
    waiting, step = list(rows), 0
    while waiting or dec.active:
        arrived = [r for r in waiting if rows.index(r) * arrive_every <= step]
        taken = []
        while arrived and dec.fits(taken, arrived[0]):
            taken.append(arrived.pop(0))
            waiting.remove(taken[-1])
        dec.admit(taken)
        dec.step()
        step += 1
    assert dec.cache is None  # released when the last row left
    return [r.tokens for r in rows], [r.finish for r in rows]


def test_decoder_equals_engine_generate_greedy(tiny_dir):
    """The server's continuous batch gives the batch engine's tokens: early EOS stops, refilled slots, requests
    joining a running batch (the cache grows), per-request budgets."""
    import ernie_vl
    from ernie_vl.engine import Engine
    from ernie_vl.generation import GenerationSettings

    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(0))
    eos = Engine(model).generate(reqs[:1], GenerationSettings(max_new_tokens=10))[0].tokens[3]
    stop = GenerationSettings(max_new_tokens=10, eos_token_id=(eos,))
    ref = Engine(model, max_batch_size=2).generate(reqs, stop)
    assert any(r.finish_reason == "stop" for r in ref) and any(r.finish_reason == "length" for r in ref)
    for max_slots, arrive_every in [(32, 0), (2, 0), (8, 2)]:
        tokens, finish = _decode(model, reqs, [stop] * len(reqs), max_slots, arrive_every)
        assert tokens == [r.tokens for r in ref], (max_slots, arrive_every)
        assert finish == [r.finish_reason for r in ref]
    budgets = [3, 10, 1, 7, 5]
    tokens, _ = _decode(model, reqs, [stop.replace(max_new_tokens=b) for b in budgets], 4, 1)
    assert tokens == [r.tokens[:b] for r, b in zip(ref, budgets)]


def test_seeded_sampling_does_not_depend_on_the_batch(tiny_dir):
    import ernie_vl
    from ernie_vl.generation import GenerationSettings

    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(1))
    p = GenerationSettings(8, do_sample=True, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    alone, _ = _decode(model, reqs[:1], [p])
    together, _ = _decode(model, reqs, [p] + [GenerationSettings(8)] * 4)
    assert together[0] == alone[0]
    other, _ = _decode(model, reqs[:1], [p.replace(seed=8)])
    assert other[0] != alone[0]


def test_a_cancelled_row_leaves_its_slot(tiny_dir):
    import ernie_vl
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.slots import ContinuousBatch

    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(2))

    class Quitter(_Row):
        def on_token(self, tok, finish):
            super().on_token(tok, finish)
            return len(self.tokens) >= 2  # e.g. a stop string matched, or the client disconnected

    dec = ContinuousBatch(model, max_slots=4)
    rows = [Quitter(reqs[0], GenerationSettings(10)), _Row(reqs[1], GenerationSettings(10))]
    dec.admit(rows)
    while dec.active:
        dec.step()
    assert len(rows[0].tokens) == 2 and rows[0].finish is None and len(rows[1].tokens) == 10


def test_fits_bounds_rows_and_padded_work(tiny_dir):
    """`fits`: an idle batch takes any first row; then rows up to max_slots and longest need x rows within
    max_batch_tokens (need = prompt + token budget)."""
    import ernie_vl
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.slots import ContinuousBatch

    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(3))  # prompts of 9, 12, 20, 3, 12 tokens
    rows = [_Row(r, GenerationSettings(10)) for r in reqs]
    need = [r.num_prompt_tokens + 10 for r in reqs]
    dec = ContinuousBatch(model, max_slots=3, max_batch_tokens=3 * max(need[:3]))
    assert ContinuousBatch(model, max_slots=1, max_batch_tokens=1).fits([], rows[2])  # idle: anything goes first
    assert dec.fits(rows[:2], rows[2]) and not dec.fits(rows[:3], rows[3])  # the fourth row: no slot
    tight = ContinuousBatch(model, max_slots=8, max_batch_tokens=2 * max(need[:2]))
    assert tight.fits(rows[:1], rows[1])  # 2 rows x the longest need == the budget
    assert not tight.fits(rows[:2], rows[4])  # 3 rows x the longest need > the budget


def test_each_row_stops_at_its_own_eos(tiny_dir):
    """EOS ids are part of each row's settings: the same request stops where its own settings say."""
    import ernie_vl
    from ernie_vl.generation import GenerationSettings

    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(4))[:1] * 2
    free, _ = _decode(model, reqs[:1], [GenerationSettings(8)])
    stop = free[0][2]
    tokens, finish = _decode(model, reqs, [GenerationSettings(8, eos_token_id=(stop,)), GenerationSettings(8)])
    cut = free[0].index(stop) + 1
    assert tokens == [free[0][:cut], free[0]] and finish == ["stop", "length"]


def test_rows_sharing_a_prefix_without_preencoded_features(tiny_dir):
    """The continuous batch's shared-prefix prefill when the prefill encodes the media itself (no features handed
    in, as the server admits rows): tokens equal those without prefix sharing."""
    import ernie_vl
    from ernie_vl.generation import GenerationSettings

    model = ernie_vl.load_model(tiny_dir)
    reqs = rotations_for(model, torch.Generator().manual_seed(9), n_questions=1, n_rotations=3)
    s = [GenerationSettings(6)] * len(reqs)
    assert _decode(model, reqs, s, min_prefix=16) == _decode(model, reqs, s)
