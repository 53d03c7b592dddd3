"""Bad model inputs raise clear errors instead of computing a silently wrong answer."""

import pytest
import torch

import ernie_vl


@pytest.fixture(scope="module")
def model(tiny_dir):
    return ernie_vl.load_model(tiny_dir)


def _ids(model, n_image_tokens):
    c = model.config
    body = [c.image_start_token_id] + [c.image_token_id] * n_image_tokens + [c.image_end_token_id]
    return torch.tensor([[30, 31] + body + [32]])


def test_placeholder_count_must_match_features(model):
    pix, grid = torch.randn(16, 588), torch.tensor([[1, 4, 4]])  # 4 image tokens
    with pytest.raises(ValueError, match="5 placeholder tokens in input_ids, 4 feature rows"):
        model(_ids(model, 5), pixel_values=pix, image_grid_thw=grid)
    with pytest.raises(ValueError, match="3 placeholder tokens in input_ids, 0 feature rows"):
        model(_ids(model, 3))


def test_grid_must_match_pixel_rows(model):
    with pytest.raises(ValueError, match=r"pixel rows \(20, 588\) do not match grid_thw \[\[1, 4, 4\]\]"):
        model(_ids(model, 4), pixel_values=torch.randn(20, 588), image_grid_thw=torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="h and w must be multiples of 2"):
        model(_ids(model, 4), pixel_values=torch.randn(15, 588), image_grid_thw=torch.tensor([[1, 3, 5]]))


def test_odd_video_frames_and_missing_grid(model):
    c = model.config
    with pytest.raises(ValueError, match="frame counts must be even"):
        model(torch.tensor([[c.video_token_id] * 2]), pixel_values_videos=torch.randn(12, 588),
              video_grid_thw=torch.tensor([[3, 2, 2]]))
    with pytest.raises(ValueError, match="pixel_values given without image_grid_thw"):
        model(_ids(model, 4), pixel_values=torch.randn(16, 588))


def test_bad_shapes(model):
    with pytest.raises(ValueError, match="input_ids must be"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 4))
