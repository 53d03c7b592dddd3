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


def test_a_later_row_continues_from_an_earlier_prompt_in_the_prefix_cache(tiny_dir):
    """As the server sees them: a question about an image, later a second question on the same image, then the next
    turn of the first chat (its prompt, the answer, a new question). Each later row continues from the stored keys
    and values of an earlier prompt and gets the tokens it gets with no reuse."""
    import ernie_vl
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.inputs import ModelInputs
    from ernie_vl.prefix import PrefixCache
    from ernie_vl.slots import ContinuousBatch

    model = ernie_vl.load_model(tiny_dir)
    c = model.config
    g = torch.Generator().manual_seed(10)
    img = [c.image_start_token_id] + [c.image_token_id] * 4 + [c.image_end_token_id]
    system = torch.randint(20, 500, (24,), generator=g).tolist()
    pix = torch.randn(16, 588, generator=g)

    def ask(*tails):
        ids = [*system, *img, *[t for tail in tails for t in tail]]
        return ModelInputs.build(torch.tensor(ids), c, pix, torch.tensor([[1, 4, 4]]))

    q1, q2 = torch.randint(20, 500, (5,), generator=g).tolist(), torch.randint(20, 500, (7,), generator=g).tolist()
    settings = GenerationSettings(6)
    alone = lambda x: _decode(model, [x], [settings])[0][0]  # noqa: E731
    answer = alone(ask(q1))
    turn2 = ask(q1, answer, [33, 34], q2)
    later = [ask(q2), turn2]
    expected = [alone(x) for x in later]

    dec = ContinuousBatch(model, min_prefix=16, prefix_cache=PrefixCache(max_bytes=64 << 20))
    first = _Row(ask(q1), settings)
    dec.admit([first])
    assert first.reused_prompt_tokens == 0
    while dec.active:
        dec.step()
    assert first.tokens == answer and len(dec.prefix_cache) == 1
    got = []
    for x in later:  # one at a time, as requests arrive
        row = _Row(x, settings)
        dec.admit([row])
        got.append(row.reused_prompt_tokens)
        while dec.active:
            dec.step()
        assert row.tokens == expected[len(got) - 1]
    assert got == [len(system) + 6, ask(q1).num_prompt_tokens]  # system + image / the whole first prompt
    assert dec.stats["prefix_tokens_reused"] == sum(got) and dec.prefix_cache.hits == 2


def test_the_prefix_cache_is_bounded_and_replaces_equal_prompts(tiny_dir):
    import ernie_vl
    from ernie_vl.prefix import PrefixCache

    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(11))
    one = model.new_cache(1, reqs[0].num_prompt_tokens)
    size = 2 * one.k_LBGCD.numel() * one.k_LBGCD.element_size()
    cache = PrefixCache(max_bytes=2 * size)
    cache.store(reqs[0], one)
    cache.store(reqs[0], model.new_cache(1, reqs[0].num_prompt_tokens))  # the same prompt: replaced, not added
    assert len(cache) == 1 and cache.bytes == size
    for x in reqs[1:4]:
        cache.store(x, model.new_cache(1, reqs[0].num_prompt_tokens))
    assert len(cache) == 2 and cache.bytes <= 2 * size  # least recently used entries left
    assert cache.lookup(reqs[0], 4) == (0, None)  # evicted
