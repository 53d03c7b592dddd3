"""Checkpoint loading in both layouts, conversion round trips, the embedded tiny checkpoint, and load errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import ernie_vl
from ernie_vl.config import ConfigError, ModelConfig
from ernie_vl.convert import convert
from ernie_vl.weights import CheckpointError, SafetensorsFolder, detect_layout

import transformers  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def ids():
    return torch.randint(20, 500, (2, 11), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def ours(tiny_dir):
    return ernie_vl.load_model(tiny_dir)


def test_tiny_checkpoint_loads_in_transformers(tiny_dir, ours, ids):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    ref = AutoModelForImageTextToText.from_pretrained(tiny_dir).eval()
    assert type(ref).__name__ == "Ernie4_5_VLMoeForConditionalGeneration"
    assert type(AutoProcessor.from_pretrained(tiny_dir)).__name__ == "Ernie4_5_VLMoeProcessor"
    with torch.no_grad():
        diff = (ours(ids).logits - ref(input_ids=ids).logits).abs().max().item()
    assert diff <= 1e-4


@pytest.mark.parametrize("save_original_format", [True, False])
def test_checkpoints_saved_by_transformers_load_and_match(tiny_dir, ours, ids, tmp_path, save_original_format):
    from transformers import AutoModelForImageTextToText

    src = tiny_dir
    if save_original_format:
        # transformers reverts only the conversions it applied at load: load the hub arrangement
        # (HF config.json + original-layout weights) so that it writes the original layout back
        src = tmp_path / "hub"
        convert(tiny_dir, src, to="original", config_format="hf")
    ref = AutoModelForImageTextToText.from_pretrained(src).eval()
    out = tmp_path / "saved"
    ref.save_pretrained(out, save_original_format=save_original_format)
    keys = SafetensorsFolder(out).keys()
    assert detect_layout(keys) == ("original" if save_original_format else "hf")
    loaded = ernie_vl.load_model(out)
    assert torch.equal(_logits(loaded, ids), _logits(ours, ids))


def test_original_layout_round_trip(tiny_dir, ours, ids, tmp_path):
    orig = tmp_path / "orig"
    assert convert(tiny_dir, orig) == "original"
    keys = SafetensorsFolder(orig).keys()
    assert "vision_model.patch_embed.proj.weight" in keys
    assert "model.layers.1.mlp.experts.15.down_proj.weight" in keys  # 2 x 8 experts, vision ones numbered 8..15
    assert "model.layers.1.mlp.gate.weight_1" in keys
    cfg = json.loads((orig / "config.json").read_text())
    assert cfg["moe_num_experts"] == [8, 8] and "text_config" not in cfg
    assert torch.equal(_logits(ernie_vl.load_model(orig), ids), _logits(ours, ids))
    # original -> hf gives back the same tensors
    back = tmp_path / "back"
    assert convert(orig, back) == "hf"
    a, b = SafetensorsFolder(tiny_dir), SafetensorsFolder(back)
    assert sorted(a.keys()) == sorted(b.keys())
    for k in a.keys():
        assert torch.equal(a.get(k), b.get(k)), k


def test_transposed_router_and_bias_rows_in_original_layout(tiny_dir, tmp_path):
    orig = tmp_path / "orig"
    convert(tiny_dir, orig)
    hf, og = SafetensorsFolder(tiny_dir), SafetensorsFolder(orig)
    assert torch.equal(og.get("model.layers.2.mlp.gate.weight_1"),
                       hf.get("model.language_model.layers.2.mlp.vision_moe.gate.weight").t())
    bias = og.get("model.layers.2.mlp.moe_statics.e_score_correction_bias")
    assert bias.shape == (2, 8)
    assert torch.equal(bias[1:], hf.get("model.language_model.layers.2.mlp.vision_moe.gate.moe_statics.e_score_correction_bias"))
    up = hf.get("model.language_model.layers.2.mlp.text_moe.experts.gate_up_proj")
    assert torch.equal(og.get("model.layers.2.mlp.experts.3.up_proj.weight"), up[3, up.shape[1] // 2:])


def test_dtype_and_fp32_routers(tiny_dir):
    m = ernie_vl.load_model(tiny_dir, dtype="bfloat16")
    assert m.dtype == torch.bfloat16
    assert m.model.language_model.layers[1].mlp.text_moe.gate.weight.dtype == torch.float32
    with torch.no_grad():
        out = m(torch.randint(20, 500, (1, 6))).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_embedded_default_is_deterministic(ids):
    a = ernie_vl.load_model()  # builds the embedded tiny checkpoint under ERNIE_VL_HOME
    b = ernie_vl.load_model()
    assert torch.equal(_logits(a, ids), _logits(b, ids))


# ------------------------------------------------------------------------------------------- bad checkpoints
def _copy(tiny_dir, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, dst)
    return dst


def _edit_shard(folder, fn):
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        tensors = load_file(folder / shard)
        new = fn(dict(tensors))
        save_file(new, folder / shard)
        index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard or k in new}
        index["weight_map"].update({k: shard for k in new})
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def test_missing_tensors_are_all_named(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path)
    gone = ["model.language_model.layers.1.mlp.text_moe.experts.down_proj", "model.vision_tower.ln.bias"]
    _edit_shard(d, lambda t: {k: v for k, v in t.items() if k not in gone})
    with pytest.raises(CheckpointError) as e:
        ernie_vl.load_model(d)
    assert all(g in str(e.value) for g in gone) and "missing 2 tensors" in str(e.value)


def test_wrong_shape_names_key_expected_and_got(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path)
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    _edit_shard(d, lambda t: {**t, key: t[key][:-1].clone()} if key in t else t)
    with pytest.raises(CheckpointError, match=r"q_proj.weight: expected \[64, 64\], got \[63, 64\]"):
        ernie_vl.load_model(d)


def test_unexpected_tensor_is_named(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path)
    _edit_shard(d, lambda t: {**t, "model.language_model.extra.weight": torch.zeros(2)} if "model.language_model.norm.weight" in t else t)
    with pytest.raises(CheckpointError, match="unexpected 1 tensors: model.language_model.extra.weight"):
        ernie_vl.load_model(d)


def test_unknown_model_type(tiny_dir, tmp_path):
    d = _copy(tiny_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "qwen2_vl"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unknown model_type 'qwen2_vl'"):
        ernie_vl.load_model(d)


def test_pickled_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(ModelConfig().to_hf_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickled weights are not loaded"):
        ernie_vl.load_model(tmp_path)


def test_bad_dtype_and_device(tiny_dir):
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        ernie_vl.load_model(tiny_dir, dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            ernie_vl.load_model(tiny_dir, device="cuda")


def test_config_formats_round_trip():
    cfg = ModelConfig()
    assert ModelConfig.from_dict(cfg.to_hf_dict()) == cfg
    orig = ModelConfig.from_dict(cfg.to_original_dict())
    assert orig.text == cfg.text and orig.vision == cfg.vision
    assert cfg.text.sparse_layers == list(range(1, 28))
