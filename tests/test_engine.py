"""The engine's batched generation equals `model.generate` run one request at a time (fp32, greedy)."""

import warnings

import pytest
import torch

import ernie_vl
from ernie_vl.engine import Engine
from ernie_vl.generation import GenerationSettings
from ernie_vl.inputs import ModelBatch, ModelInputs
from model_support import requests_for, rotations_for


def _hf(r):
    return ModelBatch.collate([r]).transformers_kwargs()


def test_engine_matches_single_request_generate(tiny_dir):
    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(0))
    free = [model.generate(**_hf(r), max_new_tokens=10)[0, r.num_prompt_tokens:].tolist() for r in reqs]
    eos = free[0][3]  # a token request 0 produces: makes that row stop early inside a batch
    expected = []
    for toks in free:
        cut = toks.index(eos) + 1 if eos in toks else len(toks)
        expected.append(toks[:cut])
    engine = Engine(model, max_batch_size=3)
    out = engine.generate(reqs, GenerationSettings(max_new_tokens=10, eos_token_id=(eos,)))
    assert [o.tokens for o in out] == expected
    assert [o.finish_reason for o in out] == ["stop" if eos in t else "length" for t in expected]
    assert all(o.prompt_tokens == r.num_prompt_tokens for o, r in zip(out, reqs))


def test_continuous_batching_refills_freed_slots(tiny_dir):
    """With 2 slots and 5 requests whose answers stop at different steps, every request still gets exactly the
    continuation it gets alone, and zero-token budgets return empty generations."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(1))
    alone = [model.generate(**_hf(r), max_new_tokens=12)[0, r.num_prompt_tokens:].tolist() for r in reqs]
    stops = [t[i % 4 + 1] for i, t in enumerate(alone)]  # different stop steps per request
    engine = Engine(model, max_batch_size=2)
    out = engine.generate(reqs, GenerationSettings(max_new_tokens=12, eos_token_id=tuple(stops)))
    for o, toks in zip(out, alone):
        cut = next((j + 1 for j, t in enumerate(toks) if t in stops), len(toks))
        assert o.tokens == toks[:cut]
    assert engine.generate(reqs[:2], GenerationSettings(max_new_tokens=0))[0].tokens == []


def test_fixed_shape_and_compiled_decode_match_eager(tiny_dir):
    """The fixed-shape step (what a CUDA graph captures) and its torch.compile'd form give the eager engine's tokens;
    one engine reused across calls with different capacities keeps giving them."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(2))
    settings = GenerationSettings(max_new_tokens=8)
    eager = Engine(model, max_batch_size=3, decode="eager")
    expected = [o.tokens for o in eager.generate(reqs, settings)]
    for mode in ("static", "compile"):
        engine = Engine(model, max_batch_size=3, decode=mode)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a fallback from torch.compile(fullgraph=True) fails here
            assert [o.tokens for o in engine.generate(reqs, settings)] == expected, mode
        assert engine.batch.capacity % 128 == 0 and engine.batch._step.mode == mode
    short = [o.tokens for o in eager.generate(reqs[:3], GenerationSettings(max_new_tokens=3))]
    assert short == [t[:3] for t in expected[:3]]
    assert [o.tokens for o in engine.generate(reqs[:3], GenerationSettings(max_new_tokens=3))] == short


def test_decode_mode_errors(tiny_dir):
    model = ernie_vl.load_model(tiny_dir)
    with pytest.raises(ValueError, match="'fast'"):
        Engine(model, decode="fast")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Engine(model, decode="graph")


def test_vision_encoded_ahead_gives_the_same_tokens(tiny_dir):
    """Encoding the next requests' images and videos while others decode (the CUDA overlap path, run here without
    a side stream) feeds each prefill the same features as encoding at admission."""
    model = ernie_vl.load_model(tiny_dir)
    g = torch.Generator().manual_seed(3)
    reqs = requests_for(model, g)
    c = model.config
    vid = torch.cat([torch.randint(20, 500, (5,), generator=g),
                     torch.tensor([c.video_start_token_id] + [c.video_token_id] * 4 + [c.video_end_token_id])])
    vpix = torch.randn(32, 588, generator=g)
    reqs.insert(2, ModelInputs.build(vid, c, pixel_values_videos=vpix, video_grid_thw=torch.tensor([[2, 4, 4]])))
    reqs.append(ModelInputs.build(torch.cat([reqs[1].input_ids, vid]), c, reqs[1].images.pixels,
                                  reqs[1].images.grid_thw, vpix, torch.tensor([[2, 4, 4]])))
    settings = GenerationSettings(max_new_tokens=6)
    plain = Engine(model, max_batch_size=2, vision_ahead=False, reuse=False).generate(reqs, settings)
    n_media = sum((r.images is not None) + (r.videos is not None) for r in reqs)
    for reuse, encoded in ((False, n_media), (True, n_media - 2)):  # the last request repeats an image and a video
        ahead = Engine(model, max_batch_size=2, vision_ahead=True, reuse=reuse)
        calls = []
        orig = model.encode
        model.encode = lambda v: calls.append(len(v.grids)) or orig(v)
        try:
            out = ahead.generate(reqs, settings)
        finally:
            del model.encode
        assert [o.tokens for o in out] == [o.tokens for o in plain], reuse
        assert len(calls) < encoded and sum(calls) == encoded, (reuse, calls)  # in groups, ahead
        assert (ahead.stats["media_encoded"], ahead.stats["media_reused"]) == (encoded, n_media - encoded)


def test_each_medium_is_encoded_once_across_calls(tiny_dir):
    """Several questions about one image (same pixels, different files or calls): the vision tower runs once for it,
    later requests and later calls take its features from the cache, and the tokens equal those without reuse;
    different pixels are a different medium."""
    model = ernie_vl.load_model(tiny_dir)
    c = model.config
    g = torch.Generator().manual_seed(6)
    pix = torch.randn(16, 588, generator=g)
    img = [c.image_start_token_id] + [c.image_token_id] * 4 + [c.image_end_token_id]
    questions = [ModelInputs.build(torch.tensor([*img, *torch.randint(20, 500, (n,), generator=g).tolist()]), c,
                                   pix.clone(), torch.tensor([[1, 4, 4]])) for n in (3, 7, 5)]
    other = ModelInputs.build(torch.tensor([*img, 40, 41]), c, pix + 1e-3, torch.tensor([[1, 4, 4]]))
    settings = GenerationSettings(max_new_tokens=5)
    expected = [o.tokens for o in Engine(model, reuse=False).generate(questions + [other], settings)]
    engine = Engine(model, max_batch_size=2)
    assert [o.tokens for o in engine.generate(questions, settings)] == expected[:3]
    assert (engine.stats["media_encoded"], engine.stats["media_reused"]) == (1, 2)
    assert [o.tokens for o in engine.generate(questions[:1] + [other], settings)] == [expected[0], expected[3]]
    assert (engine.stats["media_encoded"], engine.stats["media_reused"]) == (2, 3)
    # cache look-ups: call 1 misses the image once (its repeats in the same prefill share that encode) and hits it
    # for the later-admitted third question; call 2 hits it and misses the other image
    assert (engine.features.hits, engine.features.misses, len(engine.features)) == (2, 2, 2)


def test_byte_lru_is_bounded_and_evicts_least_recently_used():
    from ernie_vl.byte_lru import ByteLRU, tensor_bytes

    cache = ByteLRU(max_bytes=3 * 400, max_entries=4)  # three entries of 100 float32
    for k in "abc":
        cache.put(k, torch.zeros(100), tensor_bytes(torch.zeros(100)))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", torch.zeros(100), 400)
    assert "b" not in cache and all(k in cache for k in "acd") and cache.bytes == 1200
    cache.put("huge", torch.zeros(1000), 4000)  # larger than the whole budget: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 3
    assert cache.get("b") is None and (cache.hits, cache.misses) == (1, 1)
    cache.put("a", torch.ones(10), 40)  # the same key replaces its entry and its size
    assert cache.bytes == 840 and [k for k, _ in cache.items()] == ["c", "d", "a"]
    for k in "efg":  # the entry bound
        cache.put(k, None, 1)
    assert len(cache) == 4 and "c" not in cache and "d" not in cache


def test_failed_compilation_falls_back_to_the_same_step(tiny_dir):
    """A compiler failure (here: a compiled function that raises) warns and runs the uncompiled fixed-shape step,
    with the same tokens; the engine keeps working."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(4))[:3]
    settings = GenerationSettings(max_new_tokens=5)
    engine = Engine(model, max_batch_size=2, decode="compile")

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler on this machine")

    engine.generate(reqs[:1], GenerationSettings(max_new_tokens=1))  # builds the batch, compiles nothing yet
    engine.batch._compiled = broken
    engine.batch._step._fn = broken
    with pytest.warns(RuntimeWarning, match="torch.compile of the decode step failed.*no C\\+\\+ compiler"):
        out = engine.generate(reqs, settings)
    assert engine.batch._step.mode == "static"
    assert [o.tokens for o in out] == [o.tokens for o in Engine(model, max_batch_size=2).generate(reqs, settings)]


def test_stream_yields_each_step_then_the_results(tiny_dir):
    """`Engine.stream` (what an expert-parallel rank streams) yields one event per prefill or decode step with the
    new tokens of the rows still live; joined, the events are exactly the final tokens."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(5))
    free = Engine(model).generate(reqs, GenerationSettings(max_new_tokens=7))
    eos = free[1].tokens[2]  # request 1 stops early inside the batch
    settings = GenerationSettings(max_new_tokens=7, eos_token_id=(eos,))
    stream, events = Engine(model).stream(reqs, settings), []
    while True:
        try:
            events.append(next(stream))
        except StopIteration as done:
            results = done.value
            break
    joined = [[] for _ in reqs]
    for event in events:
        for i, tok in event:
            joined[i].append(tok)
    assert joined == [g.tokens for g in results] == [g.tokens for g in Engine(model).generate(reqs, settings)]
    assert len(events) == max(len(g.tokens) for g in results) == 7
    assert len(results[1].tokens) <= 3 and results[1].finish_reason == "stop"


def test_shared_prompt_prefixes_are_prefilled_once_with_the_same_tokens(tiny_dir):
    """Rotations of a question share image + hint + question: that prefix is prefilled once per question and each
    rotation's own options continue from it; greedy tokens equal the run without reuse (float32, CPU)."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = rotations_for(model, torch.Generator().manual_seed(7))
    settings = GenerationSettings(max_new_tokens=8)
    expected = [o.tokens for o in Engine(model, reuse=False).generate(reqs, settings)]
    engine = Engine(model, max_batch_size=8, min_prefix=16)
    out = engine.generate(reqs, settings)
    assert [o.tokens for o in out] == expected
    shared = 2 + 6 + 40  # hint, image (start, 4 placeholders, end), question: the options differ from there on
    assert engine.stats["prefix_tokens_reused"] == 2 * shared * 3  # two questions, three rotations reuse each
    assert engine.stats["media_encoded"] == 2 and engine.stats["media_reused"] == 6
    assert sorted(o.reused_prompt_tokens for o in out) == [0, 0] + [shared] * 6  # per request, as the rows say
    assert sorted(o.reused_media for o in out) == [0, 0] + [1] * 6
    first = Engine(model, max_batch_size=8, min_prefix=16).generate(reqs, settings.replace(max_new_tokens=1))
    assert sum(o.reused_prompt_tokens for o in first) == 2 * shared * 3  # also when a row ends at its first token
    few_slots = Engine(model, max_batch_size=3, min_prefix=16)  # groups split over admissions: still exact, and
    assert [o.tokens for o in few_slots.generate(reqs, settings)] == expected  # later admissions continue from
    assert few_slots.stats["prefix_tokens_reused"] == engine.stats["prefix_tokens_reused"]  # stored prompts
    alone = Engine(model, max_batch_size=3, min_prefix=16, prefix_cache_bytes=0)  # nothing stored: less reuse
    assert [o.tokens for o in alone.generate(reqs, settings)] == expected
    assert 0 < alone.stats["prefix_tokens_reused"] < engine.stats["prefix_tokens_reused"]


def test_shared_prefix_stops_at_other_pixels_and_at_media_boundaries(tiny_dir):
    from ernie_vl.prefix import shared_prefix

    model = ernie_vl.load_model(tiny_dir)
    c = model.config
    img = [c.image_start_token_id] + [c.image_token_id] * 4 + [c.image_end_token_id]
    pix = torch.randn(16, 588)

    def build(tail, pixels=pix):
        return ModelInputs.build(torch.tensor([7, 8, *img, 30, 31, *tail]), c, pixels, torch.tensor([[1, 4, 4]]))

    assert shared_prefix(build([40, 41]), build([40, 42])) == 11  # up to the first differing token
    assert shared_prefix(build([40, 41]), build([40, 41])) == 11  # each keeps its last token
    assert shared_prefix(build([40]), build([40], pix + 1)) == 3  # same placeholders, other pixels: before the image


def test_shared_prefix_with_media_in_the_suffixes(tiny_dir):
    """A shared first image and text, then each request's own image and video: the suffix prefills get their own
    media's features (encoded ahead and cached, or by the prefill itself) and the tokens equal the run without reuse."""
    model = ernie_vl.load_model(tiny_dir)
    c = model.config
    g = torch.Generator().manual_seed(8)
    img = [c.image_start_token_id] + [c.image_token_id] * 4 + [c.image_end_token_id]
    vid = [c.video_start_token_id] + [c.video_token_id] * 4 + [c.video_end_token_id]
    first = torch.randn(16, 588, generator=g)
    text = torch.randint(20, 500, (20,), generator=g).tolist()
    reqs = []
    for i in range(3):
        own = torch.randn(16, 588, generator=g)
        ids = [5, *img, *text, 60 + i, *img, 70, *vid, 71, 72]
        reqs.append(ModelInputs.build(torch.tensor(ids), c, torch.cat([first, own]), torch.tensor([[1, 4, 4]] * 2),
                                      torch.randn(32, 588, generator=g), torch.tensor([[2, 4, 4]])))
    settings = GenerationSettings(max_new_tokens=6)
    expected = [o.tokens for o in Engine(model, reuse=False).generate(reqs, settings)]
    for ahead in (False, True):
        engine = Engine(model, min_prefix=16, vision_ahead=ahead)
        assert [o.tokens for o in engine.generate(reqs, settings)] == expected, ahead
        assert engine.stats["prefix_tokens_reused"] == 2 * (1 + 6 + 20)


def test_groups_of_different_prefix_lengths_prefill_in_two_passes(tiny_dir, monkeypatch):
    """Questions of different lengths (so prefixes of different lengths), a request sharing nothing and a prompt
    continued from the prefix cache, all in one admission: the shared prefixes are computed in one forward pass and
    every suffix in one more (plus one for the unshared rows) — on a GPU a forward pass costs its kernel launches —
    and the tokens and logits equal those without reuse (float32, CPU)."""
    model = ernie_vl.load_model(tiny_dir)
    c = model.config
    g = torch.Generator().manual_seed(11)
    img = [c.image_start_token_id] + [c.image_token_id] * 4 + [c.image_end_token_id]
    reqs = []
    for q_len in (20, 33, 47):
        pix = torch.randn(16, 588, generator=g)
        text = torch.randint(20, 500, (q_len,), generator=g).tolist()
        for r in range(3):
            own = torch.randint(20, 500, (5 + 2 * r,), generator=g).tolist()
            reqs.append(ModelInputs.build(torch.tensor([7, *img, *text, *own, 9]), c, pix, torch.tensor([[1, 4, 4]])))
    reqs.append(ModelInputs.build(torch.randint(20, 500, (30,), generator=g), c))
    settings = GenerationSettings(max_new_tokens=6, logprobs=0)
    expected = Engine(model, reuse=False).generate(reqs, settings)
    engine = Engine(model, max_batch_size=16, min_prefix=16)
    engine.generate(reqs[:1], settings)  # its prompt is stored: the second question's rows continue from it
    passes = []
    prefill = type(model).prefill
    monkeypatch.setattr(type(model), "prefill", lambda self, batch, *a, **k: passes.append(batch.shape) or
                        prefill(self, batch, *a, **k))
    out = engine.generate(reqs[1:], settings)
    assert [o.tokens for o in out] == [o.tokens for o in expected[1:]]
    for o, e in zip(out, expected[1:]):
        assert max(abs(a.logprob - b.logprob) for a, b in zip(o.logprobs, e.logprobs)) < 1e-4
    assert len(passes) == 3, passes  # the unshared row; two prefixes held nowhere; every suffix
    reused = [o.reused_prompt_tokens for o in out]  # in a group computing its prefix, one row computes it
    assert reused[:2] == [1 + 6 + 20] * 2 and reused[-1] == 0
    assert sorted(reused[2:5]) == [0, 1 + 6 + 33, 1 + 6 + 33] and sorted(reused[5:8]) == [0, 1 + 6 + 47, 1 + 6 + 47]
