"""The engine's batched generation equals `model.generate` run one request at a time (fp32, greedy)."""

import pytest
import torch

import ernie_vl
from ernie_vl.engine import Engine, GenerationSettings, Prepared, collate


def _requests(model, g):
    c = model.config
    reqs = []
    for n_text, grid in [(9, None), (4, [1, 4, 4]), (13, [1, 2, 6]), (3, None), (6, [1, 4, 2])]:
        ids = torch.randint(20, 500, (n_text,), generator=g)
        kw = {}
        if grid:
            n_tok = grid[1] * grid[2] // 4
            ids = torch.cat([ids, torch.tensor([c.image_start_token_id] + [c.image_token_id] * n_tok + [c.image_end_token_id]), ids[:2]])
            kw = {"pixel_values": torch.randn(grid[1] * grid[2], 588, generator=g), "image_grid_thw": torch.tensor([grid])}
        reqs.append(Prepared(input_ids=ids, **kw))
    return reqs


def test_engine_matches_single_request_generate(tiny_dir):
    model = ernie_vl.load_model(tiny_dir)
    reqs = _requests(model, torch.Generator().manual_seed(0))
    free = [model.generate(**collate([r]), max_new_tokens=10)[0, r.num_prompt_tokens:].tolist() for r in reqs]
    eos = free[0][3]  # a token request 0 produces: makes that row stop early inside a batch
    expected = []
    for toks in free:
        cut = toks.index(eos) + 1 if eos in toks else len(toks)
        expected.append(toks[:cut])
    engine = Engine(model, max_batch_size=3)
    out = engine.generate(reqs, GenerationSettings(max_new_tokens=10, eos_token_id=[eos]))
    assert [o.tokens for o in out] == expected
    assert [o.finish_reason for o in out] == ["stop" if eos in t else "length" for t in expected]
    assert all(o.prompt_tokens == r.num_prompt_tokens for o, r in zip(out, reqs))


def test_continuous_batching_refills_freed_slots(tiny_dir):
    """With 2 slots and 5 requests whose answers stop at different steps, every request still gets exactly the
    continuation it gets alone, and zero-token budgets return empty generations."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = _requests(model, torch.Generator().manual_seed(1))
    alone = [model.generate(**collate([r]), max_new_tokens=12)[0, r.num_prompt_tokens:].tolist() for r in reqs]
    stops = [t[i % 4 + 1] for i, t in enumerate(alone)]  # different stop steps per request
    engine = Engine(model, max_batch_size=2)
    out = engine.generate(reqs, GenerationSettings(max_new_tokens=12, eos_token_id=stops))
    for o, toks in zip(out, alone):
        cut = next((j + 1 for j, t in enumerate(toks) if t in stops), len(toks))
        assert o.tokens == toks[:cut]
    assert engine.generate(reqs[:2], GenerationSettings(max_new_tokens=0))[0].tokens == []


def test_fixed_shape_and_compiled_decode_match_eager(tiny_dir):
    """The fixed-shape step (what a CUDA graph captures) and its torch.compile'd form give the eager engine's tokens;
    one engine reused across calls with different capacities keeps giving them."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = _requests(model, torch.Generator().manual_seed(2))
    settings = GenerationSettings(max_new_tokens=8)
    eager = Engine(model, max_batch_size=3, decode="eager")
    expected = [o.tokens for o in eager.generate(reqs, settings)]
    for mode in ("static", "compile"):
        engine = Engine(model, max_batch_size=3, decode=mode)
        assert [o.tokens for o in engine.generate(reqs, settings)] == expected, mode
        assert engine._batch.capacity % 128 == 0
    short = [o.tokens for o in eager.generate(reqs[:3], GenerationSettings(max_new_tokens=3))]
    assert short == [t[:3] for t in expected[:3]]
    assert [o.tokens for o in engine.generate(reqs[:3], GenerationSettings(max_new_tokens=3))] == short


def test_decode_mode_errors(tiny_dir):
    model = ernie_vl.load_model(tiny_dir)
    with pytest.raises(ValueError, match="'fast'"):
        Engine(model, decode="fast")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Engine(model, decode="graph")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grouped_experts_equal_reference_loop(dtype):
    """float32 goes through F.grouped_mm, float64 through the per-expert slices; both equal the transformers loop."""
    from ernie_vl.moe import experts_grouped, experts_reference

    g = torch.Generator().manual_seed(0)
    T, D, E, Fw, K = 37, 64, 8, 32, 3
    x = torch.randn(T, D, generator=g, dtype=dtype)
    gate_up, down = torch.randn(E, 2 * Fw, D, generator=g, dtype=dtype), torch.randn(E, D, Fw, generator=g, dtype=dtype)
    w, idx = torch.randn(T, E, generator=g, dtype=dtype).softmax(-1).topk(K, dim=-1)
    idx[0] = torch.tensor([5, 6, 7])  # expert 0..4 may be empty: empty groups must work
    ref = experts_reference(x, idx, w, gate_up, down)
    torch.testing.assert_close(experts_grouped(x, idx, w, gate_up, down), ref, rtol=1e-6, atol=1e-5)


def test_vision_encoded_ahead_gives_the_same_tokens(tiny_dir):
    """Encoding the next requests' images and videos while others decode (the CUDA overlap path, run here without
    a side stream) feeds each prefill the same features as encoding at admission."""
    model = ernie_vl.load_model(tiny_dir)
    g = torch.Generator().manual_seed(3)
    reqs = _requests(model, g)
    c = model.config
    vid = torch.cat([torch.randint(20, 500, (5,), generator=g),
                     torch.tensor([c.video_start_token_id] + [c.video_token_id] * 4 + [c.video_end_token_id])])
    reqs.insert(2, Prepared(vid, pixel_values_videos=torch.randn(32, 588, generator=g),
                            video_grid_thw=torch.tensor([[2, 4, 4]])))
    reqs.append(Prepared(torch.cat([reqs[1].input_ids, vid]), pixel_values=reqs[1].pixel_values,
                         image_grid_thw=reqs[1].image_grid_thw, pixel_values_videos=reqs[2].pixel_values_videos,
                         video_grid_thw=reqs[2].video_grid_thw))
    settings = GenerationSettings(max_new_tokens=6)
    plain = Engine(model, max_batch_size=2, vision_ahead=False).generate(reqs, settings)
    ahead = Engine(model, max_batch_size=2, vision_ahead=True)
    calls = []
    orig = model.encode_images
    model.encode_images = lambda *a: calls.append(1) or orig(*a)
    try:
        out = ahead.generate(reqs, settings)
    finally:
        model.encode_images = orig
    assert [o.tokens for o in out] == [o.tokens for o in plain]
    assert len(calls) < sum(r.pixel_values is not None for r in reqs)  # images were encoded in groups, ahead


def test_failed_compilation_falls_back_to_the_same_step(tiny_dir):
    """A compiler failure (here: a compiled function that raises) warns and runs the uncompiled fixed-shape step,
    with the same tokens; the engine keeps working."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = _requests(model, torch.Generator().manual_seed(4))[:3]
    settings = GenerationSettings(max_new_tokens=5)
    engine = Engine(model, max_batch_size=2, decode="compile")

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler on this machine")

    engine._batch = None
    engine.generate(reqs[:1], GenerationSettings(max_new_tokens=1))  # builds the batch, compiles nothing yet
    engine._batch._compiled = broken
    engine._batch._step._fn = broken
    with pytest.warns(RuntimeWarning, match="torch.compile of the decode step failed.*no C\\+\\+ compiler"):
        out = engine.generate(reqs, settings)
    assert engine._batch._step.mode == "static"
    assert [o.tokens for o in out] == [o.tokens for o in Engine(model, max_batch_size=2).generate(reqs, settings)]


def test_stream_batch_yields_each_step_then_the_results(tiny_dir):
    """The lockstep batch (what an expert-parallel rank runs) streams one event per decode step with the tokens of
    the rows still live; joined, the events are exactly the final tokens."""
    model = ernie_vl.load_model(tiny_dir)
    reqs = _requests(model, torch.Generator().manual_seed(5))
    free = Engine(model).generate(reqs, GenerationSettings(max_new_tokens=7))
    eos = free[1].tokens[2]  # request 1 stops early inside the batch
    settings = GenerationSettings(max_new_tokens=7, eos_token_id=[eos])
    stream, events = Engine(model).stream_batch(reqs, settings), []
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
