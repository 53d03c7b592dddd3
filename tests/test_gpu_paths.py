"""CUDA-only paths, checked on the GPU they exist for (skipped, as expected, on a machine without CUDA):

* the continuous batch's decode step replayed from a CUDA graph (`decode_step.DecodeStep`, decode="graph");
* `VisionAhead` encoding the next requests' images/videos on a side CUDA stream;
* the grouped-GEMM experts (`F.grouped_mm`, bfloat16 on CUDA) against the reference loop.

Why the graph tests look the way they do: on CUDA `F.grouped_mm` exists only in bfloat16, and the float32 experts
path reads its per-expert counts to the host, which a CUDA graph cannot capture. Token-for-token comparisons between
differently shaped computations are only meaningful in float32 (in bfloat16 the eager and fixed-shape steps differ by
up to ~0.7 in the logits of the tiny model, enough to flip a greedy choice). So:
* float32, with the experts replaced by a dense stand-in that a graph can capture: graph = eager = `model.generate`,
  token for token, while rows finish and new rows join slots of the captured graph;
* bfloat16 with the real grouped experts: the capture succeeds (no fallback) and the replayed graph gives exactly
  the tokens of the same fixed-shape step run uncaptured ("static").

ernie_vl modules are imported inside the tests (modules are moving; a failed import should fail one test).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

N_NEW = 20  # > decode_step.CAPTURE_AFTER (8): every batch below replays its captured graph for several steps


# The two places that know how a request is built and run alone.
def _request(cfg, input_ids, **vision):
    from ernie_vl.inputs import ModelInputs

    return ModelInputs.build(input_ids, cfg, **vision)


def _generate_alone(model, request, n: int) -> list[int]:
    """`model.generate` (the transformers-shaped oracle) on one request: its new tokens."""
    from ernie_vl.inputs import ModelBatch

    kw = ModelBatch.collate([request]).transformers_kwargs()
    return model.generate(**kw, max_new_tokens=n)[0, request.num_prompt_tokens:].tolist()


def _requests(cfg, g, video: bool = False):
    """Text and image requests of different lengths (and optionally videos), on the CPU as the processor makes them."""
    parts = []  # (input_ids, vision inputs)
    for n_text, grid in [(9, None), (4, [1, 4, 4]), (13, [1, 2, 6]), (3, None), (6, [1, 4, 2])]:
        ids = torch.randint(20, 500, (n_text,), generator=g)
        kw = {}
        if grid:
            body = [cfg.image_start_token_id] + [cfg.image_token_id] * (grid[1] * grid[2] // 4) + [cfg.image_end_token_id]
            ids = torch.cat([ids, torch.tensor(body), ids[:2]])
            kw = {"pixel_values": torch.randn(grid[1] * grid[2], 588, generator=g), "image_grid_thw": torch.tensor([grid])}
        parts.append((ids, kw))
    if video:
        body = [cfg.video_start_token_id] + [cfg.video_token_id] * 4 + [cfg.video_end_token_id]
        vid = torch.cat([torch.randint(20, 500, (5,), generator=g), torch.tensor(body)])
        vid_kw = {"pixel_values_videos": torch.randn(32, 588, generator=g), "video_grid_thw": torch.tensor([[2, 4, 4]])}
        image_ids, image_kw = parts[1]
        parts.insert(2, (vid, vid_kw))
        parts.append((torch.cat([image_ids, vid]), {**image_kw, **vid_kw}))  # an image and a video
    return [_request(cfg, ids, **kw) for ids, kw in parts]


def _cut_at_stop(tokens: list[int], stops: set[int]) -> list[int]:
    cut = next((j + 1 for j, t in enumerate(tokens) if t in stops), len(tokens))
    return tokens[:cut]


def _count_graph_replays(monkeypatch) -> list[int]:
    count = [0]
    replay = torch.cuda.CUDAGraph.replay

    def counting(self):
        count[0] += 1
        return replay(self)

    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counting)
    return count


def _fallbacks(recwarn) -> list[str]:
    """Warnings of a decode step that gave up its graph capture (or compilation) and ran uncaptured."""
    return [str(w.message) for w in recwarn if "decode step failed" in str(w.message)]


def _dense_experts(x_TD, idx_TK, w_TK, gate_up_E2FD, down_EDF):
    """Every expert on every token, weighted by the router's (sparse) weights: the experts' math without any
    data-dependent shape, so a CUDA graph can capture it in float32."""
    import torch.nn.functional as F

    gates_TE = torch.zeros(x_TD.shape[0], gate_up_E2FD.shape[0], dtype=x_TD.dtype, device=x_TD.device)
    gates_TE.scatter_(1, idx_TK, w_TK.to(x_TD.dtype))
    g_ETF, u_ETF = torch.einsum("td,efd->etf", x_TD, gate_up_E2FD).chunk(2, dim=-1)
    y_ETD = torch.einsum("etf,edf->etd", F.silu(g_ETF) * u_ETF, down_EDF)
    return torch.einsum("etd,te->td", y_ETD, gates_TE)


def test_graph_decode_gives_the_tokens_of_eager_decode_and_generate(tiny_dir, monkeypatch, recwarn):
    """float32, experts replaced by a dense stand-in (every path below uses it): the decode step replayed from a CUDA
    graph gives exactly the tokens of the eager decode step and of `model.generate` on each request alone, while
    rows stop at different steps (per-request stop tokens) and waiting requests are prefilled into the freed slots
    of the captured graph (2 slots, 5 requests)."""
    import ernie_vl
    from ernie_vl import moe
    from ernie_vl.engine import Engine, GenerationSettings

    dense_calls = []
    monkeypatch.setattr(moe, "experts_grouped", lambda *a: dense_calls.append(1) or _dense_experts(*a))
    model = ernie_vl.load_model(tiny_dir, device="cuda", dtype=torch.float32)
    reqs = _requests(model.config, torch.Generator().manual_seed(0))
    alone = [_generate_alone(model, r, N_NEW) for r in reqs]
    assert dense_calls, "the experts stand-in was not used: the experts seam of ernie_vl.moe moved"
    stops = {t[10 + i] for i, t in enumerate(alone)}  # rows end at different steps, most after the capture
    expected = [_cut_at_stop(t, stops) for t in alone]
    settings = GenerationSettings(max_new_tokens=N_NEW, eos_token_id=sorted(stops))

    eager = [o.tokens for o in Engine(model, max_batch_size=2, decode="eager").generate(reqs, settings)]
    replays = _count_graph_replays(monkeypatch)
    out = Engine(model, max_batch_size=2, decode="graph").generate(reqs, settings)
    assert not _fallbacks(recwarn)
    assert replays[0] > 0, "the decode step was never replayed from a CUDA graph"
    assert eager == expected
    assert [o.tokens for o in out] == expected
    assert [o.finish_reason for o in out] == ["stop" if t[-1] in stops else "length" for t in expected]


def test_graph_decode_captures_the_grouped_experts_and_replays_the_static_step(tiny_dir, monkeypatch, recwarn):
    """bfloat16 with the real experts (`F.grouped_mm` on CUDA): the decode step is captured without falling back,
    and its replays give exactly the tokens of the same fixed-shape step run uncaptured, through slot churn.
    (Bitwise equal: same kernels on the same shapes; the experts' `index_add_` adds moe_k=2 values per row onto zeros,
    which gives the same sum in either order.)"""
    import ernie_vl
    from ernie_vl.engine import Engine, GenerationSettings

    model = ernie_vl.load_model(tiny_dir, device="cuda", dtype=torch.bfloat16)
    reqs = _requests(model.config, torch.Generator().manual_seed(1))
    free = Engine(model, max_batch_size=2, decode="static").generate(reqs, GenerationSettings(max_new_tokens=N_NEW))
    stops = sorted({o.tokens[10 + i] for i, o in enumerate(free)})
    settings = GenerationSettings(max_new_tokens=N_NEW, eos_token_id=stops)
    static = [o.tokens for o in Engine(model, max_batch_size=2, decode="static").generate(reqs, settings)]
    replays = _count_graph_replays(monkeypatch)
    graph = [o.tokens for o in Engine(model, max_batch_size=2, decode="graph").generate(reqs, settings)]
    assert not _fallbacks(recwarn)
    assert replays[0] > 0, "the decode step was never replayed from a CUDA graph"
    assert graph == static
    assert len(set(t for toks in graph for t in toks)) > 3  # not one repeated token: a meaningful comparison


def test_vision_ahead_on_a_side_stream_gives_the_same_tokens(tiny_dir):
    """Images and videos of the next requests encoded on a side CUDA stream while others decode give each prefill
    the same features, hence the same tokens, as encoding at admission on the main stream."""
    import ernie_vl
    from ernie_vl.engine import Engine, GenerationSettings

    model = ernie_vl.load_model(tiny_dir, device="cuda", dtype=torch.float32)
    reqs = _requests(model.config, torch.Generator().manual_seed(3), video=True)
    settings = GenerationSettings(max_new_tokens=8)
    streams = []
    hook = model.model.vision_tower.register_forward_hook(
        lambda mod, args, out: streams.append(torch.cuda.current_stream().cuda_stream))
    try:
        plain = Engine(model, max_batch_size=2, decode="eager", vision_ahead=False).generate(reqs, settings)
        main = torch.cuda.current_stream().cuda_stream
        assert streams and set(streams) == {main}
        streams.clear()
        ahead = Engine(model, max_batch_size=2, decode="eager", vision_ahead=True).generate(reqs, settings)
    finally:
        hook.remove()
    assert any(s != main for s in streams), "no vision encoding ran on a side stream"
    assert [o.tokens for o in ahead] == [o.tokens for o in plain]
    assert [o.finish_reason for o in ahead] == [o.finish_reason for o in plain]


@pytest.mark.parametrize("T", [1, 7, 300])
def test_cuda_grouped_experts_equal_reference_loop_in_bf16(T):
    """`F.grouped_mm` experts in bfloat16 on CUDA against the transformers loop (in bfloat16 and in float32 on the
    same bfloat16 values), within bfloat16 rounding; some experts get no token (empty groups)."""
    from torch.profiler import ProfilerActivity, profile

    from ernie_vl.moe import experts_grouped, experts_reference

    g = torch.Generator(device="cuda").manual_seed(T)
    D, E, Fw, K = 64, 8, 32, 2
    kw = {"device": "cuda", "generator": g}
    x = torch.randn(T, D, **kw).bfloat16()
    gate_up = (torch.randn(E, 2 * Fw, D, **kw) / D**0.5).bfloat16()
    down = (torch.randn(E, D, Fw, **kw) / Fw**0.5).bfloat16()
    logits = torch.randn(T, E, **kw)
    logits[:, :2] -= 100.0  # experts 0 and 1 are never chosen
    w, idx = logits.softmax(-1).topk(K, dim=-1)
    w = (w / w.sum(-1, keepdim=True)).bfloat16()

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = experts_grouped(x, idx, w, gate_up, down)
    assert any("grouped_mm" in e.key for e in prof.key_averages()), "the grouped GEMM kernel did not run"
    assert out.dtype == torch.bfloat16 and out.shape == (T, D)
    ref16 = experts_reference(x, idx, w, gate_up, down)
    ref32 = experts_reference(x.float(), idx, w.float(), gate_up.float(), down.float())
    scale = ref32.abs().max().item()
    # bfloat16 keeps 8 bits: measured errors are below 1 % of the largest value; a wrong expert or weight is ~100 %
    for ref in (ref16.float(), ref32):
        torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=3e-2 * scale)
    assert ((out.float() - ref32).norm() / ref32.norm()).item() < 1.5e-2
