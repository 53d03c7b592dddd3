"""The ERNIE-4.5 tokenizer format — model-spec §13: the special tokens, the `tokenizers` pipeline (byte-fallback BPE,
no normalizer, ``Metaspace`` pre-tokenizer without dummy prefix, ``Replace → ByteFallback → Fuse`` decoder) and
``tokenizer_config.json`` as transformers 5.23.0's HF converter writes them.

Shared by :mod:`.tokenizer` (loading), :mod:`.tokenizer_sentencepiece` (conversion of an original ``tokenizer.model``)
and :mod:`.tokenizer_tiny` (the tiny test tokenizer).
"""

from __future__ import annotations

from typing import Any, Sequence

from tokenizers import Tokenizer as _BackendTokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

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
# The tokenizers pipeline and tokenizer_config.json (as the HF converter leaves them)
# --------------------------------------------------------------------------------------------------------------------
def build_backend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> _BackendTokenizer:
    """BPE + byte fallback with the ERNIE pre-tokenizer/decoder (model-spec §13), no added tokens yet."""
    tok = _BackendTokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
    return tok


def tokenizer_config(extra_special: Sequence[str]) -> dict[str, Any]:
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
