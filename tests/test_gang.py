"""An expert-sharded replica as a Ray gang (2 rank actors, gloo, tiny checkpoint): equality and restart."""

import pytest
import ray
import torch

import ernie_vl
from ernie_vl.engine import Engine
from ernie_vl.generation import GenerationSettings
from ernie_vl.inputs import ModelInputs

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_local():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def _requests(model, n=5):
    g = torch.Generator().manual_seed(11)
    c = model.config
    reqs = []
    for i in range(n):
        ids = torch.randint(20, 500, (4 + 3 * i,), generator=g)
        if i % 2:
            body = torch.tensor([c.image_start_token_id] + [c.image_token_id] * 4 + [c.image_end_token_id])
            reqs.append(ModelInputs.build(torch.cat([ids, body]), c, torch.randn(16, 588, generator=g),
                                          torch.tensor([[1, 4, 4]])))
        else:
            reqs.append(ModelInputs.build(ids, c))
    return reqs


def test_gang_equals_single_process_and_survives_a_dead_rank(ray_local, tiny_dir):
    from replicas import ExpertShardedReplica

    full = ernie_vl.load_model(tiny_dir)
    reqs = _requests(full)
    settings = GenerationSettings(max_new_tokens=6)
    expected = [g.tokens for g in Engine(full).generate(reqs, settings)]
    gang = ExpertShardedReplica(tiny_dir, k=2, placement="modality-aware", num_cpus_per_rank=0.25)
    try:
        info = gang.info()
        assert sorted(info[0]["local_experts"]["text"] + info[1]["local_experts"]["text"]) == list(range(8))
        assert [g.tokens for g in gang.generate(reqs, settings)] == expected
        ray.kill(gang.rank_actors[1], no_restart=True)  # a rank dies: the whole gang is rebuilt, the batch rerun
        assert [g.tokens for g in gang.generate(reqs, settings)] == expected
        assert gang.restarts == 1

        # streamed: every token once, in order per request; a rank killed after tokens went out (ranks run at most
        # 8 steps ahead of the reader, so it is mid-step): the rerun sends only the later ones
        lanes = [(reqs[:3], GenerationSettings(max_new_tokens=24)), (reqs[3:], GenerationSettings(max_new_tokens=20))]
        want = [[g.tokens for g in lane] for lane in gang.generate_lanes(lanes)]
        got = [[[] for _ in reqs[:3]], [[] for _ in reqs[3:]]]
        stream = gang.stream_lanes(lanes)
        for n, (r, i, tok) in enumerate(stream):
            got[r][i].append(tok)
            if n == 3:
                ray.kill(gang.rank_actors[0], no_restart=True)
        assert got == want
        assert gang.restarts == 2
    finally:
        gang.shutdown()


def test_gang_rejects_impossible_sizes(ray_local, tiny_dir):
    from replicas import ExpertShardedReplica

    with pytest.raises(ValueError, match="at most 8"):
        ExpertShardedReplica(tiny_dir, k=9)
