"""Checkpoint loading in both layouts, conversion round trips, the embedded tiny checkpoint, and load errors."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import ernie_vl
from ernie_vl.config import ConfigError, ModelConfig
from ernie_vl.convert import convert
from ernie_vl.weight_map import keep_float32, to_original
from ernie_vl.weights import CheckpointError, SafetensorsFolder, default_dtype, detect_layout, iter_hf_tensors

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


# ------------------------------------------------------------------------------------------- the transform table
# Oracle: transformers 5.23.0's own conversion of the hub layout (its "ernie4_5_vl_moe" weight-conversion mapping at
# load, `revert_weight_conversion` at `save_pretrained(save_original_format=True)`), never our table.
SUBSET = {"text": [3, 1], "vision": [0, 7, 5]}  # a rank's experts per pool, deliberately out of order


@pytest.fixture(scope="module")
def hub_dir(tiny_dir, tmp_path_factory):
    """The hub arrangement: HF config.json beside original-layout weights."""
    dst = tmp_path_factory.mktemp("hub") / "ckpt"
    convert(tiny_dir, dst, to="original", config_format="hf")
    return dst


@pytest.fixture(scope="module")
def ref_state(hub_dir):
    """transformers' model loaded from the original layout: its state dict, and the original layout it writes."""
    from transformers import AutoModelForImageTextToText

    ref = AutoModelForImageTextToText.from_pretrained(hub_dir, dtype=torch.float32).eval()
    saved = hub_dir.parent / "saved_by_transformers"
    ref.save_pretrained(saved, save_original_format=True)
    return {k: v.detach() for k, v in ref.state_dict().items()}, saved


def _unprefixed(key: str) -> str:
    """transformers writes the vision tower back as `model.vision_model.`; we write the hub's `vision_model.`."""
    return key[len("model."):] if key.startswith("model.vision_model.") else key


def _read_all(folder) -> dict[str, torch.Tensor]:
    f = SafetensorsFolder(folder)
    return {k: f.get(k) for k in f.keys()}


@pytest.mark.parametrize("layout", ["hf", "original"])
def test_table_forward_matches_transformers_conversion(tiny_dir, hub_dir, ref_state, layout):
    state, saved = ref_state
    for src in ([tiny_dir] if layout == "hf" else [hub_dir, saved]):  # both vision prefixes of the original layout
        cfg = ModelConfig.from_file(src)
        ours = dict(iter_hf_tensors(src, cfg))
        assert set(ours) == set(state) - {"lm_head.weight"}  # tied head
        for k, t in ours.items():
            assert t.shape == state[k].shape and torch.equal(t, state[k]), (src, k)


def test_table_inverse_matches_transformers_original_layout(ref_state):
    state, saved = ref_state
    cfg = ModelConfig.from_file(saved)
    theirs = {_unprefixed(k): v for k, v in _read_all(saved).items()}
    items = ((k, v) for k, v in state.items() if k != "lm_head.weight")
    ours = dict(to_original(items, cfg.text.moe_num_experts))
    assert "model.layers.1.mlp.experts.15.down_proj.weight" in ours and "vision_model.ln.bias" in ours
    assert sorted(ours) == sorted(theirs)
    for k, t in ours.items():
        assert t.shape == theirs[k].shape and torch.equal(t, theirs[k]), k


def test_convert_round_trip_from_transformers_original_layout_is_bit_exact(ref_state, tmp_path):
    """original (as transformers writes it) -> hf -> original gives back every tensor, bit for bit."""
    _, saved = ref_state
    assert convert(saved, tmp_path / "hf") == "hf"
    assert detect_layout(SafetensorsFolder(tmp_path / "hf").keys()) == "hf"
    assert convert(tmp_path / "hf", tmp_path / "orig") == "original"
    a = {_unprefixed(k): v for k, v in _read_all(saved).items()}
    b = _read_all(tmp_path / "orig")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("layout", ["hf", "original"])
def test_expert_subset_reads_only_those_experts(tiny_dir, hub_dir, ref_state, layout, monkeypatch):
    state, _ = ref_state
    src = tiny_dir if layout == "hf" else hub_dir
    cfg = ModelConfig.from_file(src)
    E = cfg.text.moe_num_experts
    reads: list[tuple[str, int | None]] = []
    get, get_row = SafetensorsFolder.get, SafetensorsFolder.get_row
    monkeypatch.setattr(SafetensorsFolder, "get", lambda self, k: reads.append((k, None)) or get(self, k))
    monkeypatch.setattr(SafetensorsFolder, "get_row", lambda self, k, i: reads.append((k, i)) or get_row(self, k, i))
    ours = dict(iter_hf_tensors(src, cfg, expert_subset=SUBSET))
    for k, t in ours.items():
        pool = "text" if ".text_moe.experts." in k else "vision" if ".vision_moe.experts." in k else None
        want = state[k][SUBSET[pool]] if pool else state[k]
        assert torch.equal(t, want), k
    # the other experts are never read from disk
    expert_reads = [(k, r) for k, r in reads if ".experts." in k and ".shared_experts." not in k]
    if layout == "hf":
        assert {r for _, r in expert_reads} == set(SUBSET["text"]) | set(SUBSET["vision"])
        assert all(r in SUBSET["text" if ".text_moe." in k else "vision"] for k, r in expert_reads)
    else:
        numbers = {int(k.split(".experts.")[1].split(".")[0]) for k, _ in expert_reads}
        assert numbers == set(SUBSET["text"]) | {E + e for e in SUBSET["vision"]}
    # an empty subset reads no expert at all and gives [0, ...] stacks
    reads.clear()
    empty = dict(iter_hf_tensors(src, cfg, expert_subset={"text": [], "vision": []}))
    assert not [k for k, _ in reads if ".experts." in k and ".shared_experts." not in k]
    k = "model.language_model.layers.1.mlp.vision_moe.experts.down_proj"
    assert empty[k].shape == (0, *state[k].shape[1:])


def test_keep_float32_is_the_reference_rule(hub_dir, ref_state):
    """The parameters transformers keeps float32 in a bfloat16 load are exactly those `keep_float32` names, in both
    layouts' names; our load, `to_dtype` and bf16 conversion keep the same set."""
    from transformers import AutoModelForImageTextToText

    ref = AutoModelForImageTextToText.from_pretrained(hub_dir, dtype=torch.bfloat16)
    ref32 = {k for k, p in ref.named_parameters() if p.dtype == torch.float32}
    assert ref32 and all(p.dtype == torch.bfloat16 for k, p in ref.named_parameters() if k not in ref32)
    state, saved = ref_state
    assert {k for k in state if keep_float32(k)} == ref32
    # original-layout names (as transformers writes them): routers `gate.weight`/`gate.weight_1` and the [2, E] biases
    orig = SafetensorsFolder(saved).keys()
    orig32 = {k for k in orig if re.search(r"\.mlp\.(gate\.weight(_1)?|moe_statics\..*)$", k)}
    assert len(ref32) % 4 == 0 and len(orig32) == len(ref32) // 4 * 3  # per MoE layer 2 routers + 2 biases -> + 1 bias
    assert {k for k in orig if keep_float32(k)} == orig32

    ours = ernie_vl.load_model(hub_dir, dtype="bfloat16")
    assert {k for k, p in ours.named_parameters() if p.dtype == torch.float32} == ref32
    ours = ernie_vl.load_model(hub_dir).to_dtype(torch.bfloat16)
    assert {k for k, p in ours.named_parameters() if p.dtype == torch.float32} == ref32


def test_bf16_conversion_keeps_routers_and_biases_float32(hub_dir, ref_state, tmp_path):
    _, saved = ref_state
    convert(hub_dir, tmp_path / "bf16", to="original", dtype="bfloat16")
    mine = _read_all(tmp_path / "bf16")
    theirs = {_unprefixed(k): v for k, v in _read_all(saved).items()}
    assert sorted(mine) == sorted(theirs)
    for k, t in mine.items():
        want = theirs[k] if ".gate." in k or "moe_statics" in k else theirs[k].to(torch.bfloat16)
        assert t.dtype == want.dtype and torch.equal(t, want), k


def test_to_original_needs_both_rows_of_the_bias(ref_state):
    state, _ = ref_state
    k = "model.language_model.layers.1.mlp.text_moe.gate.moe_statics.e_score_correction_bias"
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.moe_statics.e_score_correction_bias"):
        list(to_original(iter([(k, state[k])]), 8))


@pytest.mark.parametrize(("asked", "device", "want"), [
    (None, "cuda", "bfloat16"), (None, "cuda:1", "bfloat16"), (None, "cpu", None), (None, None, None),
    ("float32", "cuda", "float32"), ("auto", "cuda", "auto"), ("float16", "cpu", "float16"),
])
def test_default_dtype_is_bfloat16_on_gpus_else_the_checkpoints(asked, device, want):
    assert default_dtype(asked, device) == want


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


def test_original_layout_errors_name_every_offender(hub_dir, tmp_path):
    d = _copy(hub_dir, tmp_path)
    cfg = ModelConfig.from_file(d)
    E, D = cfg.text.moe_num_experts, cfg.text.hidden_size
    gone = f"model.layers.1.mlp.experts.{E + 3}.up_proj.weight"
    router = "model.layers.2.mlp.gate.weight_1"  # stored [D, E]
    bias = "model.layers.2.mlp.moe_statics.e_score_correction_bias"  # stored [2, E]
    extra = f"model.layers.2.mlp.experts.{2 * E}.down_proj.weight"

    def edit(t):
        t = {k: v for k, v in t.items() if k != gone}
        if router in t:
            t[router] = t[router][:, :-1].clone()
        if bias in t:
            t[bias] = torch.cat([t[bias], t[bias][:1]])
            t[extra] = torch.zeros(D, 4)
        return t

    _edit_shard(d, edit)
    with pytest.raises(CheckpointError) as e:
        ernie_vl.load_model(d)
    msg = str(e.value)
    assert "original layout" in msg and f"missing 1 tensors: {gone}" in msg
    assert f"model.language_model.layers.2.mlp.vision_moe.gate.weight: expected [{E}, {D}], got [{E - 1}, {D}]" in msg
    assert (f"model.language_model.layers.2.mlp.text_moe.gate.moe_statics.e_score_correction_bias: expected [1, {E}], "
            f"got {bias} [3, {E}]") in msg
    assert f"unexpected 1 tensors: {extra}" in msg


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
