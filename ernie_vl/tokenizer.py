"""ERNIE-4.5 tokenizer on the `tokenizers` library, matching transformers 5.23.0's converted `LlamaTokenizer`.

Contract (model-spec §13): a byte-fallback BPE, no normalizer, pre-tokenizer
``Metaspace(replacement="▁", prepend_scheme="never", split=False)`` (no dummy prefix: ``"User"`` not ``"▁User"``),
decoder ``Replace("▁", " ") → ByteFallback → Fuse``. Added tokens (the ERNIE specials and the ten digits) are split
out before BPE. Padding is on the **left** with ``<unk>`` (id 0), ``add_bos_token`` is false, so encoding a string
adds no special token at all.

Loading: ``tokenizer.json`` + ``tokenizer_config.json`` from a checkpoint folder (what the HF converter writes). When a
checkpoint only has the original SentencePiece ``tokenizer.model``, :func:`convert_sentencepiece` builds the same
tokenizer the HF converter (`convert_ernie4_5_vl_moe_to_hf.convert_tokenizer`) would, without sentencepiece/protobuf.

The format itself (special tokens, pipeline, config) is :mod:`.tokenizer_spec`; the conversion is
:mod:`.tokenizer_sentencepiece`; :func:`ernie_vl.tokenizer_tiny.write_tiny_tokenizer` writes a small, deterministic
tokenizer with the real special-token layout for tests and tiny checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tokenizers import Tokenizer as _BackendTokenizer

from .tokenizer_sentencepiece import convert_sentencepiece
from .tokenizer_spec import MODEL_MAX_LENGTH, MULTIMODAL_TOKEN_ATTRS, NAMED_SPECIAL_DEFAULTS


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
