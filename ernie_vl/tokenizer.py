"""ERNIE-4.5 tokenizer on the `tokenizers` library, matching transformers 5.23.0's converted `LlamaTokenizer`.

Contract (model-spec §13): a byte-fallback BPE, no normalizer, pre-tokenizer
``Metaspace(replacement="▁", prepend_scheme="never", split=False)`` (no dummy prefix: ``"User"`` not ``"▁User"``),
decoder ``Replace("▁", " ") → ByteFallback → Fuse``. Added tokens (the ERNIE specials and the ten digits) are split
out before BPE. Padding is on the **left** with ``<unk>`` (id 0), ``add_bos_token`` is false, so encoding a string
adds no special token at all.

Loading: ``tokenizer.json`` + ``tokenizer_config.json`` from a checkpoint folder (what the HF converter writes). When a
checkpoint only has the original SentencePiece ``tokenizer.model``, :func:`convert_sentencepiece` builds the same
tokenizer the HF converter (`convert_ernie4_5_vl_moe_to_hf.convert_tokenizer`) would, without sentencepiece/protobuf.

:func:`write_tiny_tokenizer` writes a small, deterministic tokenizer with the real special-token layout for tests
and tiny checkpoints.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tokenizers import AddedToken, Tokenizer as _BackendTokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

from .errors import ProcessingError

# --------------------------------------------------------------------------------------------------------------------
# Special tokens (model-spec §13)
# --------------------------------------------------------------------------------------------------------------------
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
BEGIN_OF_SENTENCE = "<|begin_of_sentence|>"
END_OF_SENTENCE = "<|end_of_sentence|>"
IMAGE_TOKEN = "<|IMAGE_PLACEHOLDER|>"
IMAGE_START = "<|IMAGE_START|>"
IMAGE_END = "<|IMAGE_END|>"
VIDEO_TOKEN = "<|VIDEO_PLACEHOLDER|>"
VIDEO_START = "<|VIDEO_START|>"
VIDEO_END = "<|VIDEO_END|>"
THINK_START, THINK_END = "<think>", "</think>"
MASK = "<mask:1>"
DIGITS = tuple(str(i) for i in range(10))

# The multimodal/thinking tokens the HF converter appends to `extra_special_tokens` (in this order).
CONVERTER_EXTRA_SPECIAL = (IMAGE_TOKEN, IMAGE_START, IMAGE_END, VIDEO_TOKEN, VIDEO_START, VIDEO_END, THINK_START, THINK_END)
# Attribute name → token string, as the converter adds them to tokenizer_config.json.
MULTIMODAL_TOKEN_ATTRS = {
    "image_token": IMAGE_TOKEN,
    "image_end_token": IMAGE_END,
    "image_start_token": IMAGE_START,
    "video_token": VIDEO_TOKEN,
    "video_end_token": VIDEO_END,
    "video_start_token": VIDEO_START,
}
# Named special-token attributes of the converted tokenizer (LlamaTokenizer + converter arguments).
NAMED_SPECIAL_DEFAULTS = {
    "bos_token": BOS,
    "eos_token": EOS,
    "unk_token": UNK,
    "pad_token": UNK,
    "cls_token": BEGIN_OF_SENTENCE,
    "sep_token": END_OF_SENTENCE,
    "mask_token": MASK,
}
MODEL_MAX_LENGTH = 131072


# --------------------------------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------------------------------
class Tokenizer:
    """A `tokenizers.Tokenizer` plus the ERNIE special-token attributes of `tokenizer_config.json`.

    Attributes mirror the transformers tokenizer the reference processor reads: ``bos_token``, ``eos_token``,
    ``pad_token``, ``image_token``, ``image_start_token``, ... and their ``*_id`` counterparts; ``padding_side`` is
    ``"left"``; ``chat_template`` is the checkpoint's template (if any).
    """

    padding_side = "left"

    def __init__(self, backend: _BackendTokenizer, config: dict[str, Any] | None = None, chat_template: str | None = None):
        self.backend = backend
        self.config = dict(config or {})
        self.chat_template = chat_template or self.config.get("chat_template")
        self.model_max_length = int(self.config.get("model_max_length", MODEL_MAX_LENGTH))
        self.padding_side = self.config.get("padding_side", type(self).padding_side)

        for attr, default in {**NAMED_SPECIAL_DEFAULTS, **MULTIMODAL_TOKEN_ATTRS}.items():
            value = self.config.get(attr, default)
            if isinstance(value, dict):  # serialized AddedToken
                value = value.get("content")
            setattr(self, attr, value)
            setattr(self, f"{attr}_id", self.token_to_id(value) if value is not None else None)

        extra = self.config.get("extra_special_tokens") or self.config.get("additional_special_tokens") or []
        if isinstance(extra, dict):  # transformers also accepts {name: token}
            extra = list(extra.values())
        self.extra_special_tokens = list(dict.fromkeys(t["content"] if isinstance(t, dict) else t for t in extra))

        # Ids skipped by `decode(skip_special_tokens=True)`: the named and extra special tokens, plus every added token
        # flagged special in tokenizer.json (transformers registers all of them as special on load).
        named = [getattr(self, a) for a in NAMED_SPECIAL_DEFAULTS]
        special_strings = [t for t in named + self.extra_special_tokens if t is not None]
        ids = {self.token_to_id(t) for t in special_strings}
        ids |= {i for i, tok in self.backend.get_added_tokens_decoder().items() if tok.special}
        self.all_special_ids = sorted(i for i in ids if i is not None)
        self._special_id_set = frozenset(self.all_special_ids)

    # ---------------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Tokenizer":
        """Load ``tokenizer.json`` (or convert ``tokenizer.model``) and ``tokenizer_config.json`` from a folder."""
        path = Path(path)
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        template = None
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        if (path / "tokenizer.json").is_file():
            backend = _BackendTokenizer.from_file(str(path / "tokenizer.json"))
        elif (path / "tokenizer.model").is_file():
            backend, config = convert_sentencepiece(path / "tokenizer.model", config)
        else:
            raise FileNotFoundError(f"{path}: neither tokenizer.json nor tokenizer.model found")
        return cls(backend, config, chat_template=template)

    # ---------------------------------------------------------------------------------------------------- lookup
    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.backend.token_to_id(tokens)
        return [self.backend.token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        return [self.backend.id_to_token(int(i)) for i in ids]

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary (without added tokens beyond it)."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        """Named special tokens (what transformers passes to chat templates as variables)."""
        out: dict[str, Any] = {a: getattr(self, a) for a in NAMED_SPECIAL_DEFAULTS if getattr(self, a) is not None}
        return out

    # ---------------------------------------------------------------------------------------------------- encoding
    def encode(self, text: str) -> list[int]:
        """Token ids of one string (no special tokens are added: ``add_bos_token`` is false)."""
        return self.backend.encode(text, add_special_tokens=True).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=True)]

    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = False,
        max_length: int | None = None,
        truncation: bool = False,
        padding_side: str | None = None,
        return_tensors: str | None = None,
    ) -> dict[str, Any]:
        """Tokenize like transformers: ``{"input_ids", "attention_mask"}`` as lists or ``[B, S]`` int64 tensors.

        ``padding``: False / True or ``"longest"`` / ``"max_length"`` (needs ``max_length``). Padding uses
        ``pad_token_id`` on ``padding_side`` (default left). ``truncation`` keeps the first ``max_length`` ids.
        """
        batch = [text] if isinstance(text, str) else list(text)
        ids = self.encode_batch(batch)
        if truncation and max_length is not None:
            ids = [x[:max_length] for x in ids]
        masks = [[1] * len(x) for x in ids]
        if padding and padding != "do_not_pad":
            if padding == "max_length":
                if max_length is None:
                    raise ValueError("padding='max_length' needs max_length")
                target = max_length
            else:
                target = max((len(x) for x in ids), default=0)
            side = padding_side or self.padding_side
            pad_id = self.pad_token_id if self.pad_token_id is not None else 0
            for i, x in enumerate(ids):
                n = target - len(x)
                if n > 0:
                    if side == "left":
                        ids[i], masks[i] = [pad_id] * n + x, [0] * n + masks[i]
                    else:
                        ids[i], masks[i] = x + [pad_id] * n, masks[i] + [0] * n
        if return_tensors == "pt":
            if len({len(x) for x in ids}) > 1:
                raise ValueError("sequences have different lengths; pass padding=True to return tensors")
            return {
                "input_ids": torch.tensor(ids, dtype=torch.long).reshape(len(ids), -1),
                "attention_mask": torch.tensor(masks, dtype=torch.long).reshape(len(ids), -1),
            }
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported (use None or 'pt')")
        if isinstance(text, str):
            return {"input_ids": ids[0], "attention_mask": masks[0]}
        return {"input_ids": ids, "attention_mask": masks}

    # ---------------------------------------------------------------------------------------------------- decoding
    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = False) -> str:
        """Text of one id sequence.

        ``skip_special_tokens`` drops the added tokens flagged special in tokenizer.json (as transformers does: its
        decode is the backend's; note ``<think>``/``</think>`` are not flagged special in the ERNIE tokenizer).
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Iterable[Iterable[int]] | torch.Tensor, skip_special_tokens: bool = False) -> list[str]:
        """Text of each sequence of a batch (``[B, S]`` tensor or list of id lists)."""
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]


# --------------------------------------------------------------------------------------------------------------------
# Pipeline pieces shared by the tiny tokenizer and the SentencePiece conversion
# --------------------------------------------------------------------------------------------------------------------
def _build_backend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> _BackendTokenizer:
    """BPE + byte fallback with the ERNIE pre-tokenizer/decoder (model-spec §13), no added tokens yet."""
    tok = _BackendTokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    return tok


def _tokenizer_config(extra_special: Sequence[str]) -> dict[str, Any]:
    """tokenizer_config.json as the HF converter leaves it (minus its duplicated entries and loader artefacts)."""
    return {
        "add_prefix_space": False,
        "backend": "tokenizers",
        "bos_token": BOS,
        "clean_up_tokenization_spaces": False,
        "cls_token": BEGIN_OF_SENTENCE,
        "eos_token": EOS,
        "extra_special_tokens": list(dict.fromkeys(extra_special)),
        **{k: v for k, v in MULTIMODAL_TOKEN_ATTRS.items()},
        "mask_token": MASK,
        "model_max_length": MODEL_MAX_LENGTH,
        "model_specific_special_tokens": dict(MULTIMODAL_TOKEN_ATTRS),
        "pad_token": UNK,
        "processor_class": "Ernie4_5_VLMoeProcessor",
        "sep_token": END_OF_SENTENCE,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": UNK,
        "use_default_system_prompt": False,
    }


# --------------------------------------------------------------------------------------------------------------------
# SentencePiece tokenizer.model → tokenizers (what transformers + the HF ERNIE converter produce)
# --------------------------------------------------------------------------------------------------------------------
def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _iter_fields(buf: bytes):
    """Yield (field_number, wire_type, value) of a protobuf message (value: int, bytes or raw 4/8 bytes)."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def read_sentencepiece_model(path: str | Path) -> tuple[list[tuple[str, float, int]], int]:
    """Pieces ``[(piece, score, type)]`` and model type (1 unigram, 2 BPE) of a SentencePiece ``ModelProto`` file.

    Piece types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    """
    data = Path(path).read_bytes()
    pieces: list[tuple[str, float, int]] = []
    model_type = 1  # proto default: UNIGRAM
    try:
        for field, _, value in _iter_fields(data):
            if field == 1:  # repeated SentencePiece pieces
                piece, score, ptype = "", 0.0, 1
                for f, _, v in _iter_fields(value):
                    if f == 1:
                        piece = v.decode("utf-8")
                    elif f == 2:
                        score = struct.unpack("<f", v)[0]
                    elif f == 3:
                        ptype = v
                pieces.append((piece, score, ptype))
            elif field == 2:  # TrainerSpec
                for f, _, v in _iter_fields(value):
                    if f == 3:
                        model_type = v
    except (IndexError, UnicodeDecodeError, ValueError, struct.error) as e:
        raise ProcessingError(f"not a valid SentencePiece model ({e})", source=str(path)) from e
    if not pieces:
        raise ProcessingError("SentencePiece model has no pieces", source=str(path))
    return pieces, model_type


def _merges_from_vocab(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece BPE vocabulary.

    Every split ``(left, right)`` of a piece whose halves are both pieces is a merge; merges are ranked by the id of
    the merged piece, then by the halves' lengths (this is the rule transformers' SentencePiece extraction uses, so the
    ranks, and therefore the encodings, match the converted tokenizer.json).
    """
    merges: list[tuple[str, str, int]] = []
    for piece, piece_id in vocab.items():
        local = []
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                local.append((left, right, piece_id))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])))
    return [(a, b) for a, b, _ in merges]


def convert_sentencepiece(model_path: str | Path, config: dict[str, Any] | None = None) -> tuple[_BackendTokenizer, dict]:
    """Build the converted ERNIE tokenizer from an original SentencePiece BPE ``tokenizer.model``.

    Mirrors ``LlamaTokenizer.from_pretrained(<spm>, pad/cls/sep/mask..., add_bos_token=False, add_prefix_space=False)``
    followed by the HF ERNIE converter: control/user-defined pieces become added tokens, the ten digits are added as
    non-special tokens (one token per digit), and the multimodal/thinking tokens are registered as extra specials
    (appended to the vocabulary when the SentencePiece model lacks them).

    Returns the backend tokenizer and the tokenizer config (the given one, completed with the converter's entries).
    """
    pieces, model_type = read_sentencepiece_model(model_path)
    if model_type != 2:
        raise ProcessingError("only BPE SentencePiece models are supported (ERNIE uses BPE)", source=str(model_path))
    vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
    backend = _build_backend(vocab, _merges_from_vocab(vocab))

    user_cfg = dict(config or {})
    named = {**NAMED_SPECIAL_DEFAULTS}
    for attr in named:
        value = user_cfg.get(attr)
        if isinstance(value, dict):
            value = value.get("content")
        if value:
            named[attr] = value
    named_set = set(named.values())
    # Control (3) and user-defined (4) pieces become added tokens, in id order. Control pieces are special;
    # user-defined ones only when they are one of the named special tokens (transformers' rule).
    spm_added = [(p, t == 3 or p in named_set) for p, _, t in pieces if t in (3, 4)]
    spm_contents = {p for p, _ in spm_added}
    for p, special in spm_added:
        if p in DIGITS and not special:
            backend.add_tokens([AddedToken(p, normalized=False, special=False)])
        elif special:
            backend.add_special_tokens([AddedToken(p, normalized=False, special=True)])
        else:
            backend.add_tokens([AddedToken(p, normalized=False, special=False)])
    backend.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in named.values() if t not in spm_contents]
    )
    # The converter adds the ten digits as non-special tokens and registers the multimodal/thinking tokens.
    backend.add_tokens([AddedToken(d, normalized=False, special=False) for d in DIGITS if d not in spm_contents])
    backend.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in CONVERTER_EXTRA_SPECIAL if t not in spm_contents]
    )
    special_strings = list(dict.fromkeys([*named.values(), *(p for p, _ in spm_added if p not in DIGITS)]))

    extra = [t for t in special_strings if t not in (named["bos_token"], named["eos_token"], named["unk_token"])]
    out = _tokenizer_config([*extra, *CONVERTER_EXTRA_SPECIAL])
    for attr, value in named.items():
        out[attr] = value
    # The original (pre-conversion) chat template uses other placeholder strings; the converted checkpoint gets the
    # HF template, and so do we (see ernie_vl.chat.DEFAULT_CHAT_TEMPLATE), unless a chat_template.jinja is present.
    return backend, out


# --------------------------------------------------------------------------------------------------------------------
# Tiny deterministic tokenizer for tests and tiny checkpoints
# --------------------------------------------------------------------------------------------------------------------
_TINY_CORPUS = """
User: What kind of dog is this? Assistant: The animal in the image is a lynx, not a dog. It is a wild cat with
distinctive ear tufts, a short tail and a thick coat. Describe the following video. A person is lying on their back
on a mat in a dojo. They are dressed in a white judo uniform and they practice with a partner while the others watch.
Picture one shows a red car parked next to a small house. Picture two shows two cats sleeping on a blue sofa. There
are no dogs here, there are two cats. Which option is correct? Answer with the letter of the correct option only.
Options: A, B, C, D. The answer is B. Please think step by step and then give the final answer. What is the color of
the sky in this picture? The sky is bright blue with a few white clouds. How many people are in the image? There are
three people standing near the table. What time is shown on the clock? The clock shows a quarter past three in the
afternoon. Read the text in the image and summarize it. The sign says that the store opens early in the morning and
closes late at night. Who are you? I am an AI assistant designed to help answer questions, provide information, and
assist with tasks. I do not have personal experiences or a physical form. The video shows a cooking lesson: the chef
cuts the vegetables, heats the pan, adds oil and stirs everything together until the food is ready to serve. Compare
the two images and explain the difference between them. In the first image the door is open, in the second it is
closed. Is the statement true or false? The statement is false because the chart shows a decrease, not an increase.
Describe the scene in detail, including the objects, the people, their actions and the weather. The weather is sunny
and warm, and children are playing football in the park while their parents are talking on the benches. Find the
value of x in the equation shown in the figure. First subtract the constant from both sides, then divide by the
coefficient, so the value of x is equal to the result. The graph has a title, two axes with labels and a legend that
explains the lines. The highest point of the blue line is in the middle of the year. Look at the map and tell me which
city is closest to the river. The city in the north is the closest one. What does the person in the video do after
opening the box? She takes out a book, reads the first page and then puts it back on the shelf.
"""


def _train_bpe(text: str, num_merges: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Deterministic BPE training (ties broken lexicographically) on SentencePiece-style words ``"▁word"``.

    Returns the alphabet (sorted) and the merges in order. Digits are not part of any word (they are added tokens).
    """
    words = Counter()
    for m in re.finditer(r" ?[A-Za-z]+| ?[^\sA-Za-z0-9]", text):
        words[m.group().replace(" ", "▁")] += 1
    alphabet = sorted({ch for w in words for ch in w})
    seqs = {w: list(w) for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best_count = max(pairs.values())
        if best_count < 2:
            break
        best = min(p for p, c in pairs.items() if c == best_count)
        merges.append(best)
        joined = best[0] + best[1]
        for w, s in seqs.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == best[0] and s[i + 1] == best[1]:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return alphabet, merges


TINY_VOCAB_LIMIT = 1024


def write_tiny_tokenizer(dst: str | Path) -> dict[str, int]:
    """Write a small deterministic ERNIE-style ``tokenizer.json`` + ``tokenizer_config.json`` into ``dst``.

    Layout (ids): ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, digits ``"0"``–``"9"`` 3–12 (non-special added tokens, as the
    real tokenizer), byte-fallback pieces ``<0x00>``–``<0xFF>``, the alphabet and BPE merges learnt from a fixed
    built-in English text, then the ERNIE special tokens. Loadable by transformers 5.23.0 (``AutoTokenizer`` /
    ``AutoProcessor``) and by :class:`Tokenizer`.

    Returns the ids the model config needs: ``vocab_size`` (all tokens, ≤ 1024), ``bos_token_id``,
    ``eos_token_id``, ``pad_token_id``, ``image_token_id``, ``image_start_token_id``, ``image_end_token_id``,
    ``video_token_id``, ``video_start_token_id``, ``video_end_token_id``, ``end_of_sentence_token_id``.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    specials_tail = [
        BEGIN_OF_SENTENCE, END_OF_SENTENCE, IMAGE_TOKEN, IMAGE_START, IMAGE_END,
        VIDEO_TOKEN, VIDEO_START, VIDEO_END, THINK_START, THINK_END, MASK,
    ]  # fmt: skip
    head = [UNK, BOS, EOS, *DIGITS, *(f"<0x{b:02X}>" for b in range(256))]
    alphabet, _ = _train_bpe(_TINY_CORPUS, 0)
    budget = TINY_VOCAB_LIMIT - len(head) - len(alphabet) - len(specials_tail)
    alphabet, merges = _train_bpe(_TINY_CORPUS, budget)

    vocab: dict[str, int] = {}
    for piece in [*head, *alphabet, *(a + b for a, b in merges), *specials_tail]:
        if piece not in vocab:  # a merge may recreate an existing piece
            vocab[piece] = len(vocab)
    backend = _build_backend(vocab, merges)
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in (UNK, BOS, EOS)])
    backend.add_tokens([AddedToken(d, normalized=False, special=False) for d in DIGITS])
    # <think>/</think> are extra special tokens in the config but not flagged special in the converted tokenizer.json.
    backend.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in specials_tail if t not in (THINK_START, THINK_END)]
    )
    backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in (THINK_START, THINK_END)])
    backend.save(str(dst / "tokenizer.json"))

    config = _tokenizer_config(
        [BEGIN_OF_SENTENCE, END_OF_SENTENCE, IMAGE_TOKEN, IMAGE_START, IMAGE_END, VIDEO_TOKEN, VIDEO_START, VIDEO_END,
         THINK_START, THINK_END, MASK]
    )  # fmt: skip
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    size = backend.get_vocab_size(with_added_tokens=True)
    assert size <= TINY_VOCAB_LIMIT, size
    ids = {
        "vocab_size": size,
        "bos_token_id": vocab[BOS],
        "eos_token_id": vocab[EOS],
        "pad_token_id": vocab[UNK],
        "image_token_id": vocab[IMAGE_TOKEN],
        "image_start_token_id": vocab[IMAGE_START],
        "image_end_token_id": vocab[IMAGE_END],
        "video_token_id": vocab[VIDEO_TOKEN],
        "video_start_token_id": vocab[VIDEO_START],
        "video_end_token_id": vocab[VIDEO_END],
        "end_of_sentence_token_id": vocab[END_OF_SENTENCE],
    }
    return ids
