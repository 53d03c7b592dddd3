"""The preallocated KV cache (`ernie_vl.kv_cache.KVCache`): expected buffers are built here with plain tensor indexing
(clone + slice assignment, `torch.cat`, `torch.stack`), never by calling the cache.

Legend: L layers, B rows (slots), G kv heads, C capacity, D head dim, S new tokens.
"""

from __future__ import annotations

import pytest
import torch

from ernie_vl.kv_cache import KVCache

L, B, G, C, D = 2, 3, 2, 8, 4


def _cache(fill: bool = False, seed: int = 0) -> KVCache:
    cache = KVCache(L, B, G, C, D, torch.float32, "cpu")
    if fill:  # distinct random contents, so a copy from the wrong place shows
        g = torch.Generator().manual_seed(seed)
        cache.k_LBGCD.copy_(torch.randn(L, B, G, C, D, generator=g))
        cache.v_LBGCD.copy_(torch.randn(L, B, G, C, D, generator=g))
    return cache


def _kv(S: int, seed: int, rows: int = B):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, G, S, D, generator=g), torch.randn(rows, G, S, D, generator=g)


def test_new_cache_is_zero_with_the_asked_shape():
    cache = _cache()
    assert cache.k_LBGCD.shape == cache.v_LBGCD.shape == (L, B, G, C, D)
    assert not cache.k_LBGCD.any() and not cache.v_LBGCD.any()
    assert (cache.capacity, cache.length) == (C, 0)


def test_shared_offset_writes_append_and_return_the_prefix():
    cache = _cache()
    k1, v1 = _kv(3, seed=1)
    k2, v2 = _kv(2, seed=2)
    k_out, v_out = cache.update(1, k1, v1, 0)
    assert torch.equal(k_out, k1) and torch.equal(v_out, v1)
    cache.advance(3)
    k_out, v_out = cache.update(1, k2, v2, cache.length)
    cache.advance(2)
    assert cache.length == 5
    assert torch.equal(k_out, torch.cat([k1, k2], dim=2)) and torch.equal(v_out, torch.cat([v1, v2], dim=2))
    expected_k = torch.zeros(L, B, G, C, D)
    expected_k[1, :, :, :5] = torch.cat([k1, k2], dim=2)
    assert torch.equal(cache.k_LBGCD, expected_k)  # layer 0 and positions 5.. untouched


def test_shared_offset_overflow_is_an_error_naming_the_sizes():
    cache = _cache(fill=True)
    before = cache.k_LBGCD.clone()
    k, v = _kv(3, seed=3)
    with pytest.raises(ValueError, match="overflow: 9 tokens for a capacity of 8"):
        cache.update(0, k, v, 6)
    assert torch.equal(cache.k_LBGCD, before)  # nothing written
    cache.update(0, k[:, :, :2], v[:, :, :2], 6)  # exactly full is fine


def test_per_row_offsets_write_one_token_per_row_at_its_own_position():
    cache = _cache(fill=True)
    expected_k, expected_v = cache.k_LBGCD.clone(), cache.v_LBGCD.clone()
    k, v = _kv(1, seed=4)
    start = torch.tensor([2, 0, 5])
    cache.view_len = 6
    k_out, v_out = cache.update(1, k, v, start)
    for b, s in enumerate(start.tolist()):
        expected_k[1, b, :, s] = k[b, :, 0]
        expected_v[1, b, :, s] = v[b, :, 0]
    assert torch.equal(cache.k_LBGCD, expected_k) and torch.equal(cache.v_LBGCD, expected_v)
    assert torch.equal(k_out, expected_k[1, :, :, :6]) and torch.equal(v_out, expected_v[1, :, :, :6])
    assert cache.length == 0  # per-row writes leave the shared length alone (the slots track their own)


def test_load_rows_copies_spans_to_position_zero_of_the_slots():
    src = _cache(fill=True, seed=5)
    dst = _cache(fill=True, seed=6)
    expected_k, expected_v = dst.k_LBGCD.clone(), dst.v_LBGCD.clone()
    expected_k[:, 2, :, :3] = src.k_LBGCD[:, 1, :, 1:4]
    expected_v[:, 2, :, :3] = src.v_LBGCD[:, 1, :, 1:4]
    expected_k[:, 0, :, :5] = src.k_LBGCD[:, 0, :, 3:8]
    expected_v[:, 0, :, :5] = src.v_LBGCD[:, 0, :, 3:8]
    src_before = src.k_LBGCD.clone()
    dst.load_rows([2, 0], src, [1, 0], [(1, 4), (3, 8)])
    assert torch.equal(dst.k_LBGCD, expected_k) and torch.equal(dst.v_LBGCD, expected_v)
    assert torch.equal(src.k_LBGCD, src_before)


def test_load_rows_from_a_cache_of_another_shape():
    """A prefill's temporary cache (its own batch size and capacity) into the slots of a larger one."""
    src = KVCache(L, 2, G, 5, D, torch.float32, "cpu")
    g = torch.Generator().manual_seed(7)
    src.k_LBGCD.copy_(torch.randn(L, 2, G, 5, D, generator=g))
    src.v_LBGCD.copy_(torch.randn(L, 2, G, 5, D, generator=g))
    dst = _cache()
    dst.load_rows([1], src, [1], [(2, 5)])
    expected = torch.zeros(L, B, G, C, D)
    expected[:, 1, :, :3] = src.k_LBGCD[:, 1, :, 2:5]
    assert torch.equal(dst.k_LBGCD, expected)


def test_select_rows_keeps_the_given_rows_in_order():
    cache = _cache(fill=True, seed=8)
    k, v = cache.k_LBGCD.clone(), cache.v_LBGCD.clone()
    cache.select_rows(torch.tensor([2, 0]))
    assert cache.k_LBGCD.shape == (L, 2, G, C, D)
    assert torch.equal(cache.k_LBGCD, torch.stack([k[:, 2], k[:, 0]], dim=1))
    assert torch.equal(cache.v_LBGCD, torch.stack([v[:, 2], v[:, 0]], dim=1))
    k_new, v_new = _kv(1, seed=9, rows=2)
    k_out, _ = cache.update(0, k_new, v_new, 4)  # later writes go to the kept rows
    assert torch.equal(k_out[:, :, 4], k_new[:, :, 0]) and torch.equal(k_out[1, :, :4], k[0, 0, :, :4])
