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
