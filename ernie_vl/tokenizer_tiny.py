"""A small deterministic ERNIE-style tokenizer for tests and tiny checkpoints: a BPE trained on a fixed built-in text
(deterministic merges, ties broken lexicographically) with the real special-token layout, loadable by transformers
5.23.0 and by :class:`ernie_vl.tokenizer.Tokenizer`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from tokenizers import AddedToken

from .tokenizer_spec import (
    BEGIN_OF_SENTENCE,
    BOS,
    DIGITS,
    END_OF_SENTENCE,
    EOS,
    IMAGE_END,
    IMAGE_START,
    IMAGE_TOKEN,
    MASK,
    THINK_END,
    THINK_START,
    UNK,
    VIDEO_END,
    VIDEO_START,
    VIDEO_TOKEN,
    build_backend,
    tokenizer_config,
)

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
    backend = build_backend(vocab, merges)
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in (UNK, BOS, EOS)])
    backend.add_tokens([AddedToken(d, normalized=False, special=False) for d in DIGITS])
    # <think>/</think> are extra special tokens in the config but not flagged special in the converted tokenizer.json.
    backend.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in specials_tail if t not in (THINK_START, THINK_END)]
    )
    backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in (THINK_START, THINK_END)])
    backend.save(str(dst / "tokenizer.json"))

    config = tokenizer_config(
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
