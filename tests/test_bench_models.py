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


def test_bfloat16_parity_is_judged_by_the_reference_model():
    """`check_parity` in bfloat16, where implementations split near-ties: identical rows pass without judging; rows
    that differ only by a token the reference ranks second pass, judged by the reference itself (teacher forcing);
    rows of random tokens fail."""
    import argparse

    from ernie_vl.bench import generate as g

    a = argparse.Namespace(threads=None, device="cpu", dtype="bfloat16", shape="tiny", compare="hf")
    device, dtype, cfg, _, ref = g.setup(a)
    reqs = workload(cfg, 2)
    hf = g.hf_runner(ref, cfg, reqs, device, "grouped_mm")()[1]
    assert g.check_parity({"ours": hf, "hf": [list(r) for r in hf]}, dtype)["rule"] == "identical rows"
    with torch.inference_mode():  # the reference's own ranking of the last token of row 0
        logits = ref(**g._hf_inputs(cfg, [reqs[0]], hf[0][:-1])).logits[0, -1]
    other = next(t for t in logits.topk(2).indices.tolist() if t != hf[0][-1])
    near = [hf[0][:-1] + [other], hf[1]]
    p = g.check_parity({"ours": near, "hf": hf}, dtype, ref, cfg, reqs, device)
    assert not p["tokens_equal"] and p["ok"], p
    assert p["judged"]["ours"]["in_reference_top5"] == 1.0
    rnd = torch.Generator().manual_seed(3)
    noise = [torch.randint(10, cfg.text.vocab_size - 16, (len(r),), generator=rnd).tolist() for r in hf]
    p = g.check_parity({"ours": noise, "hf": hf}, dtype, ref, cfg, reqs, device)
    assert not p["ok"] and p["judged"]["ours"]["reference_argmax"] < p["floors"]["reference_argmax"], p
