"""Tokenizer: the tiny checkpoint tokenizer and parity with transformers 5.23.0 on the same files."""

from __future__ import annotations

import json

import pytest
import torch

from ernie_vl.processor import write_processor_files
from ernie_vl.tokenizer import Tokenizer, write_tiny_tokenizer

transformers = pytest.importorskip("transformers")

TEXTS = [
    "",
    "Hello world",
    "User: What kind of dog is this?",
    "<|begin_of_sentence|>User: What kind of dog is this?Picture 1:<|IMAGE_START|><|IMAGE_PLACEHOLDER|>"
    "<|IMAGE_PLACEHOLDER|><|IMAGE_END|>\nAssistant: <think>\n\n</think>\n\n",
    "Numbers 1234567890 and 3.14159, 42x, x42.",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n",
    "unicode: café, naïve, 你好, 🙂, Ω",
    "Video 2:<|VIDEO_START|><|VIDEO_PLACEHOLDER|><|VIDEO_END|>",
    "<think>reasoning</think>answer<|end_of_sentence|></s><s><unk><mask:1>",
    "<|IMAGE_PLACEHOLDER|><|IMAGE_PLACEHOLDER|>text<|VIDEO_PLACEHOLDER|>",
    "▁already▁has▁metaspace",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_tok")
    ids = write_tiny_tokenizer(d)
    write_processor_files(d)
    return d, ids


@pytest.fixture(scope="module")
def hf_tok(tiny_dir):
    return transformers.AutoTokenizer.from_pretrained(str(tiny_dir[0]))


def test_tiny_ids_contract(tiny_dir):
    d, ids = tiny_dir
    assert ids["vocab_size"] <= 1024
    assert (ids["pad_token_id"], ids["bos_token_id"], ids["eos_token_id"]) == (0, 1, 2)
    tok = Tokenizer.from_pretrained(d)
    assert len(tok) == ids["vocab_size"]
    for key, token in [
        ("image_token_id", "<|IMAGE_PLACEHOLDER|>"),
        ("image_start_token_id", "<|IMAGE_START|>"),
        ("image_end_token_id", "<|IMAGE_END|>"),
        ("video_token_id", "<|VIDEO_PLACEHOLDER|>"),
        ("video_start_token_id", "<|VIDEO_START|>"),
        ("video_end_token_id", "<|VIDEO_END|>"),
        ("end_of_sentence_token_id", "<|end_of_sentence|>"),
    ]:
        assert tok.token_to_id(token) == ids[key]
    # digits are single added tokens 3..12, as in the real ERNIE tokenizer ("1" == 4)
    assert [tok.token_to_id(str(i)) for i in range(10)] == list(range(3, 13))
    assert tok.image_token_id == ids["image_token_id"] and tok.video_token_id == ids["video_token_id"]


def test_tiny_tokenizer_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert write_tiny_tokenizer(a) == write_tiny_tokenizer(b)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "tokenizer_config.json").read_bytes() == (b / "tokenizer_config.json").read_bytes()


def test_pipeline_matches_spec(tiny_dir):
    data = json.loads((tiny_dir[0] / "tokenizer.json").read_text())
    assert data["normalizer"] is None
    assert data["pre_tokenizer"] == {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": False}
    assert [d["type"] for d in data["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse"]
    assert data["model"]["type"] == "BPE" and data["model"]["byte_fallback"] is True


def test_transformers_loads_tiny_folder(tiny_dir):
    proc = transformers.AutoProcessor.from_pretrained(str(tiny_dir[0]))
    assert type(proc).__name__ == "Ernie4_5_VLMoeProcessor"
    assert proc.image_token_id == tiny_dir[1]["image_token_id"]
    assert proc.video_token_id == tiny_dir[1]["video_token_id"]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_parity(tiny_dir, hf_tok, text):
    ours = Tokenizer.from_pretrained(tiny_dir[0])
    assert ours.encode(text) == hf_tok(text)["input_ids"]


def test_batch_padding_parity(tiny_dir, hf_tok):
    ours = Tokenizer.from_pretrained(tiny_dir[0])
    a = ours(TEXTS, padding=True, return_tensors="pt")
    b = hf_tok(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    a = ours(TEXTS[:4], padding="max_length", max_length=64)
    b = hf_tok(TEXTS[:4], padding="max_length", max_length=64)
    assert a["input_ids"] == b["input_ids"] and a["attention_mask"] == b["attention_mask"]


@pytest.mark.parametrize("skip", [False, True])
def test_decode_parity(tiny_dir, hf_tok, skip):
    ours = Tokenizer.from_pretrained(tiny_dir[0])
    seqs = [hf_tok(t)["input_ids"] for t in TEXTS]
    assert ours.batch_decode(seqs, skip_special_tokens=skip) == hf_tok.batch_decode(seqs, skip_special_tokens=skip)
    # random ids, including byte-fallback pieces that do not form valid UTF-8
    g = torch.Generator().manual_seed(0)
    rnd = torch.randint(0, len(ours), (8, 40), generator=g)
    assert ours.batch_decode(rnd, skip_special_tokens=skip) == hf_tok.batch_decode(rnd, skip_special_tokens=skip)
