"""The benchmark's model pair: transformers' model shares our parameter tensors (so the 28B pair fits one card)."""

import pytest
import torch

from ernie_vl.bench.generate import _config, _parameters_on_meta, build_models, workload


@pytest.mark.parametrize("shape", ["tiny", "small", "28b"])
def test_transformers_module_tree_matches_ours_at_every_shape(shape):
    """Built without memory (meta), the two trees have the same parameter names and shapes, ties included —
    what `build_models` needs to alias them at the 28B shape on a GPU."""
    from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration

    from ernie_vl.model import ErnieVLForConditionalGeneration

    cfg = _config(shape)
    with torch.device("meta"):
        ours = ErnieVLForConditionalGeneration(cfg)
    with _parameters_on_meta():
        ref = Ernie4_5_VLMoeForConditionalGeneration(Ernie4_5_VLMoeConfig(**cfg.to_hf_dict()))
    mine = {n: p.shape for n, p in ours.named_parameters()}
    theirs = {n: p.shape for n, p in ref.named_parameters()}
    assert mine == theirs
    assert (ref.lm_head.weight is ref.model.language_model.embed_tokens.weight) == cfg.tie_word_embeddings
    assert all(b.device.type == "cpu" for b in ref.buffers())  # rotary tables are real, parameters are not


def test_build_models_shares_weights_and_agrees():
    cfg = _config("tiny")
    ours, ref = build_models(cfg, torch.float32, torch.device("cpu"), with_hf=True)
    mine = dict(ours.named_parameters(remove_duplicate=False))
    assert all(p is mine[n] for n, p in ref.named_parameters(remove_duplicate=False))
    assert all(p.device.type == "cpu" for p in ref.parameters())
    assert ref.model.language_model.layers[1].mlp.text_moe.gate.weight.dtype == torch.float32
    from ernie_vl.bench.generate import _hf_inputs

    kw = _hf_inputs(cfg, workload(cfg, 2))
    with torch.inference_mode():
        a = ours(**{k: v for k, v in kw.items() if not k.endswith("token_type_ids")}).logits
        b = ref(**kw).logits
    mask = kw["attention_mask"].bool()
    assert (a - b).abs()[mask].max().item() < 1e-4
