"""Tokenizer: the tiny checkpoint tokenizer and parity with transformers 5.23.0 on the same files."""

from __future__ import annotations

import json

import pytest
import torch

from ernie_vl.processor_files import write_processor_files
from ernie_vl.tokenizer import Tokenizer
from ernie_vl.tokenizer_tiny import write_tiny_tokenizer

import transformers  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip

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
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_tok")
    ids = write_tiny_tokenizer(d)
    write_processor_files(d)
    return d, ids


@pytest.fixture(scope="module")
def hf_tok(tok_dir):
    return transformers.AutoTokenizer.from_pretrained(str(tok_dir[0]))


def test_tiny_ids_contract(tok_dir):
    d, ids = tok_dir
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


def test_pipeline_matches_spec(tok_dir):
    data = json.loads((tok_dir[0] / "tokenizer.json").read_text())
    assert data["normalizer"] is None
    assert data["pre_tokenizer"] == {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": False}
    assert [d["type"] for d in data["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse"]
    assert data["model"]["type"] == "BPE" and data["model"]["byte_fallback"] is True


def test_transformers_loads_tiny_folder(tok_dir):
    proc = transformers.AutoProcessor.from_pretrained(str(tok_dir[0]))
    assert type(proc).__name__ == "Ernie4_5_VLMoeProcessor"
    assert proc.image_token_id == tok_dir[1]["image_token_id"]
    assert proc.video_token_id == tok_dir[1]["video_token_id"]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_parity(tok_dir, hf_tok, text):
    ours = Tokenizer.from_pretrained(tok_dir[0])
    assert ours.encode(text) == hf_tok(text)["input_ids"]


def test_batch_padding_parity(tok_dir, hf_tok):
    ours = Tokenizer.from_pretrained(tok_dir[0])
    a = ours(TEXTS, padding=True, return_tensors="pt")
    b = hf_tok(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    a = ours(TEXTS[:4], padding="max_length", max_length=64)
    b = hf_tok(TEXTS[:4], padding="max_length", max_length=64)
    assert a["input_ids"] == b["input_ids"] and a["attention_mask"] == b["attention_mask"]


@pytest.mark.parametrize("skip", [False, True])
def test_decode_parity(tok_dir, hf_tok, skip):
    ours = Tokenizer.from_pretrained(tok_dir[0])
    seqs = [hf_tok(t)["input_ids"] for t in TEXTS]
    assert ours.batch_decode(seqs, skip_special_tokens=skip) == hf_tok.batch_decode(seqs, skip_special_tokens=skip)
    # random ids, including byte-fallback pieces that do not form valid UTF-8
    g = torch.Generator().manual_seed(0)
    rnd = torch.randint(0, len(ours), (8, 40), generator=g)
    assert ours.batch_decode(rnd, skip_special_tokens=skip) == hf_tok.batch_decode(rnd, skip_special_tokens=skip)


# ------------------------------------------------------------------------------------------------------------------
# SentencePiece tokenizer.model → the converted tokenizer (checkpoints that only ship the original SPM model)
# ------------------------------------------------------------------------------------------------------------------
ERNIE_SPECIALS = ["<|begin_of_sentence|>", "<|end_of_sentence|>", "<|IMAGE_PLACEHOLDER|>", "<|IMAGE_START|>",
                  "<|IMAGE_END|>", "<|VIDEO_PLACEHOLDER|>", "<|VIDEO_START|>", "<|VIDEO_END|>", "<think>", "</think>",
                  "<mask:1>"]  # fmt: skip


def _train_spm(folder, control: bool):
    import sentencepiece as spm

    from ernie_vl.tokenizer_tiny import _TINY_CORPUS

    corpus = folder / "corpus.txt"
    corpus.write_text((_TINY_CORPUS + "\n") * 3 + "naïve café 你好 12345 67890\n")
    kwargs = dict(user_defined_symbols=[str(i) for i in range(10)] + ([] if control else ERNIE_SPECIALS))
    if control:
        kwargs["control_symbols"] = ERNIE_SPECIALS
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=420, model_type="bpe",
        byte_fallback=True, minloglevel=2, **kwargs,
    )  # fmt: skip
    (folder / "tokenizer.vocab").unlink()
    corpus.unlink()
    return folder


def _hf_convert(src, dst):
    """What transformers' ERNIE converter (convert_ernie4_5_vl_moe_to_hf.convert_tokenizer) does."""
    from tokenizers import AddedToken

    tok = transformers.LlamaTokenizer.from_pretrained(
        str(src), pad_token="<unk>", cls_token="<|begin_of_sentence|>", sep_token="<|end_of_sentence|>",
        mask_token="<mask:1>", add_bos_token=False, add_prefix_space=False,
    )  # fmt: skip
    tok.model_max_length = 131072
    tok.add_tokens([AddedToken(f"{i}", normalized=False, special=False) for i in range(10)])
    tmp = dst.parent / (dst.name + "_tmp")
    tok.save_pretrained(str(tmp))
    cfg = json.loads((tmp / "tokenizer_config.json").read_text())
    extra = cfg["extra_special_tokens"]
    for t in ["<s>", "</s>", *[str(i) for i in range(10)]]:
        if t in extra:
            extra.remove(t)
    extra += ["<|IMAGE_PLACEHOLDER|>", "<|IMAGE_START|>", "<|IMAGE_END|>", "<|VIDEO_PLACEHOLDER|>",
              "<|VIDEO_START|>", "<|VIDEO_END|>", "<think>", "</think>"]  # fmt: skip
    (tmp / "tokenizer_config.json").write_text(json.dumps(cfg))
    transformers.AutoTokenizer.from_pretrained(str(tmp)).save_pretrained(str(dst))
    return transformers.AutoTokenizer.from_pretrained(str(dst))


@pytest.mark.parametrize("control", [False, True], ids=["user_defined", "control"])
def test_sentencepiece_conversion_parity(tmp_path, control):
    spm_dir = _train_spm(tmp_path / "spm", control) if (tmp_path / "spm").mkdir() is None else None
    hf = _hf_convert(spm_dir, tmp_path / "hf")
    ours = Tokenizer.from_pretrained(spm_dir)  # only tokenizer.model in the folder
    assert sorted(p.name for p in spm_dir.iterdir()) == ["tokenizer.model"]
    texts = TEXTS + ["Picture 12: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>", "The sky is bright blue 2024."]
    for t in texts:
        assert ours.encode(t) == hf(t)["input_ids"], t
    seqs = [hf(t)["input_ids"] for t in texts]
    for skip in (False, True):
        assert ours.batch_decode(seqs, skip_special_tokens=skip) == hf.batch_decode(seqs, skip_special_tokens=skip)
    assert ours.image_token_id == hf.convert_tokens_to_ids("<|IMAGE_PLACEHOLDER|>")
    assert ours.video_token_id == hf.convert_tokens_to_ids("<|VIDEO_PLACEHOLDER|>")


def test_sentencepiece_errors(tmp_path):
    from ernie_vl.errors import ProcessingError
    from ernie_vl.tokenizer_sentencepiece import read_sentencepiece_model

    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(ProcessingError):
        read_sentencepiece_model(bad)
