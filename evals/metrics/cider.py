"""CIDEr-D as ``pycocoevalcap.cider`` computes it, without the Java PTB tokenizer (VLMEvalKit's use).

n = 1..4-grams of whitespace tokens; TF-IDF vectors with document frequency over the *evaluated*
references (``df`` counted once per image) and ``idf = log(#images) - log(max(1, df))``; per n the
clipped cosine ``Σ min(h, r)·r / (|h|·|r|)`` times the Gaussian length penalty
``exp(-(Δ²) / (2σ²))``, σ = 6; mean over n, mean over references, ×10.

NOTE: like ``cider_scorer.counts2vec`` the "length" is the number of **bigrams** (it counts terms where
``n == 1`` in 0-based n-gram order) — a quirk of the reference kept so that numbers match. Scores of a
subset differ from the full-set scores because the document frequencies change.
"""

from __future__ import annotations

import math
from collections import defaultdict


def _ngrams(sentence: str, n: int = 4) -> dict[tuple, int]:
    words = sentence.split()
    counts: dict[tuple, int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


def cider(candidates: dict[str, str], references: dict[str, list[str]], n: int = 4, sigma: float = 6.0) -> dict:
    """Corpus CIDEr-D and per-image scores: ``{"cider": float, "per_image": {id: float}}``."""
    if set(candidates) != set(references):
        raise ValueError("cider: candidates and references must have the same image ids")
    ids = list(references)
    if not ids:
        return {"cider": 0.0, "per_image": {}}
    for image_id in ids:
        if not references[image_id]:
            raise ValueError(f"cider: image {image_id!r} has no reference")
    cooked_refs = {i: [_ngrams(r, n) for r in references[i]] for i in ids}
    cooked_test = {i: _ngrams(candidates[i], n) for i in ids}
    df: dict[tuple, float] = defaultdict(float)
    for i in ids:
        for gram in {g for ref in cooked_refs[i] for g in ref}:
            df[gram] += 1
    log_n_images = math.log(float(len(ids)))

    def vectorise(counts):
        vec = [dict() for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            value = float(tf) * (log_n_images - math.log(max(1.0, df.get(gram, 0.0))))
            vec[k][gram] = value
            norm[k] += value * value
            if k == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def similarity(vh, vr, nh, nr, lh, lr):
        delta = float(lh - lr)
        penalty = math.e ** (-(delta ** 2) / (2 * sigma ** 2))
        out = []
        for k in range(n):
            val = sum(min(h, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, h in vh[k].items())
            if nh[k] != 0 and nr[k] != 0:
                val /= nh[k] * nr[k]
            out.append(val * penalty)
        return out

    per_image = {}
    for i in ids:
        vh, nh, lh = vectorise(cooked_test[i])
        total = [0.0] * n
        for ref in cooked_refs[i]:
            vr, nr, lr = vectorise(ref)
            total = [a + b for a, b in zip(total, similarity(vh, vr, nh, nr, lh, lr))]
        per_image[i] = (sum(total) / n) / len(cooked_refs[i]) * 10.0
    return {"cider": sum(per_image.values()) / len(per_image), "per_image": per_image}
