"""SentencePiece ``tokenizer.model`` → the converted ERNIE tokenizer, without sentencepiece or protobuf installed.

A minimal protobuf wire-format reader gets the pieces of the ``ModelProto``; :func:`convert_sentencepiece` then builds
what transformers + the HF ERNIE converter (``convert_ernie4_5_vl_moe_to_hf.convert_tokenizer``) produce: the BPE
merges implied by the vocabulary, control/user-defined pieces as added tokens, the digits and the multimodal tokens.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer as _BackendTokenizer

from .errors import ProcessingError
from .tokenizer_spec import (
    CONVERTER_EXTRA_SPECIAL,
    DIGITS,
    NAMED_SPECIAL_DEFAULTS,
    build_backend,
    tokenizer_config,
)


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
    backend = build_backend(vocab, _merges_from_vocab(vocab))

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
    out = tokenizer_config([*extra, *CONVERTER_EXTRA_SPECIAL])
    for attr, value in named.items():
        out[attr] = value
    # The original (pre-conversion) chat template uses other placeholder strings; the converted checkpoint gets the
    # HF template, and so do we (see ernie_vl.chat.DEFAULT_CHAT_TEMPLATE), unless a chat_template.jinja is present.
    return backend, out
