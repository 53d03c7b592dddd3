"""Requests for engine and continuous-batch tests, built as the processor builds them (`ModelInputs.build`)."""

import torch

from ernie_vl.inputs import ModelInputs


def requests_for(model, g):
    """Five requests: text-only and image prompts of different lengths (the tiny model's token ids)."""
    c = model.config
    reqs = []
    for n_text, grid in [(9, None), (4, [1, 4, 4]), (13, [1, 2, 6]), (3, None), (6, [1, 4, 2])]:
        ids = torch.randint(20, 500, (n_text,), generator=g)
        kw = {}
        if grid:
            n_tok = grid[1] * grid[2] // 4
            ids = torch.cat([ids, torch.tensor([c.image_start_token_id] + [c.image_token_id] * n_tok + [c.image_end_token_id]), ids[:2]])
            kw = {"pixel_values": torch.randn(grid[1] * grid[2], 588, generator=g), "image_grid_thw": torch.tensor([grid])}
        reqs.append(ModelInputs.build(ids, c, **kw))
    return reqs


def rotations_for(model, g, n_questions=2, n_rotations=4):
    """MMBench-like requests: per question one image, a hint and question before the options, the options rotated;
    the rotations of different questions interleaved, as a harness lists them."""
    c = model.config
    img = [c.image_start_token_id] + [c.image_token_id] * 4 + [c.image_end_token_id]
    reqs = []
    questions = [(torch.randn(16, 588, generator=g), torch.randint(20, 500, (40,), generator=g).tolist(),
                  torch.randint(20, 500, (4, 6), generator=g).tolist()) for _ in range(n_questions)]
    for r in range(n_rotations):
        for pix, text, options in questions:
            rotated = options[r:] + options[:r]
            ids = [7, 8, *img, *text, *[t for opt in rotated for t in opt], 9, 10]
            reqs.append(ModelInputs.build(torch.tensor(ids), c, pix, torch.tensor([[1, 4, 4]])))
    return reqs
