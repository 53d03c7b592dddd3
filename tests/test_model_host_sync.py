"""The model side reads nothing back from the device: prefill, vision encoding and the decode step run without a
host synchronisation (`aten._local_scalar_dense` — `.item()`, `int(t)`, `bool(t)` —, `nonzero`, masked selections)
and without `.tolist()`/`.item()` calls. On CPU nothing would stall, but the same ops are what stall a GPU stream and
break CUDA-graph capture, so counting them here keeps the GPU path honest."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ernie_vl
from ernie_vl.decode_step import decode_slots
from ernie_vl.inputs import ModelBatch, ModelInputs

SYNCING = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.masked_scatter",
           "aten.is_nonzero", "aten.equal", "aten._unique2", "aten.unique_consecutive", "aten.unique_dim",
           "aten.repeat_interleave"}  # repeat_interleave with tensor repeats sizes its output from device values


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def host_reads(monkeypatch):
    """Counts Tensor.tolist/.item calls and records every dispatched op while active."""
    calls = []
    for name in ("tolist", "item"):
        orig = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=orig, _n=name: calls.append(_n) or _o(self, *a))
    return calls


def _batch(model):
    c = model.config
    g = torch.Generator().manual_seed(0)
    img = [c.image_start_token_id] + [c.image_token_id] * 4 + [c.image_end_token_id]
    vid = [c.video_start_token_id] + [c.video_token_id] * 4 + [c.video_end_token_id]
    items = [
        ModelInputs.build(torch.randint(20, 500, (7,), generator=g), c),
        ModelInputs.build(torch.tensor([30, 31, *img, 32]), c, torch.randn(16, 588, generator=g),
                          torch.tensor([[1, 4, 4]])),
        ModelInputs.build(torch.tensor([40, *vid, 41, 42, *img]), c, torch.randn(16, 588, generator=g),
                          torch.tensor([[1, 4, 4]]), torch.randn(32, 588, generator=g), torch.tensor([[2, 4, 4]])),
    ]
    return ModelBatch.collate(items)


def test_prefill_and_decode_never_read_the_device(tiny_dir, host_reads):
    model = ernie_vl.load_model(tiny_dir)
    batch = _batch(model)
    B, S = batch.shape
    cache = model.new_cache(B, S + 4)
    tokens = torch.tensor([5, 6, 7])
    positions = batch.next_positions[:, :, None].contiguous()
    lengths = torch.full((B,), S)
    host_reads.clear()  # loading and building inputs read freely: that is the host side
    with torch.inference_mode(), _Recorder() as rec:
        model.prefill(batch, cache, logits_to_keep=1)
        for step in range(2):  # the decode step, eager (keys cut on the host) and fixed-shape
            decode_slots(model, tokens, positions + step, cache, lengths + step, S + step + 1)
            decode_slots(model, tokens, positions + step, cache, lengths + step, S + 4)
    n_reads = len(host_reads)
    found = sorted({op for op in rec.ops if op in SYNCING})
    assert not found, f"host synchronisations on the model side: {found}"
    assert n_reads == 0, f"Tensor.tolist/.item called on the model side: {host_reads}"
    assert "aten.index_copy" in rec.ops and "aten._grouped_mm" in rec.ops  # the paths under test really ran


def test_the_recorder_sees_a_host_read(host_reads):
    """The check can fail: the old way of splitting tokens between pools is caught."""
    vis = torch.tensor([True, False, True])
    with _Recorder() as rec:
        vis.nonzero()
        int(vis.sum())
    assert {"aten.nonzero", "aten._local_scalar_dense"} <= set(rec.ops)
    torch.tensor([1]).item()
    assert host_reads == ["item"]
