"""Penalties and log-probabilities of the sampling path (`ernie_vl.sampling`, applied per row by the continuous batch).

References computed independently: transformers' `RepetitionPenaltyLogitsProcessor` for the repetition penalty,
numpy for OpenAI's presence/frequency penalties, and, end to end, a greedy loop that recomputes the whole sequence
with the model's full forward at every step and applies those references to its last logits.
"""

import numpy as np
import pytest
import torch

from model_support import requests_for


def _numpy_presence_frequency(logits, generated, presence, frequency):
    out = logits.astype(np.float64).copy()
    for b, toks in enumerate(generated):
        counts = np.bincount(np.asarray(toks, dtype=np.int64), minlength=out.shape[1]).astype(np.float64)
        out[b] -= frequency * counts + presence * (counts > 0)
    return out


def _counts(generated, V):
    c = torch.zeros(len(generated), V)
    for b, toks in enumerate(generated):
        for t in toks:
            c[b, t] += 1
    return c


def test_repetition_penalty_equals_transformers():
    from transformers import RepetitionPenaltyLogitsProcessor

    from ernie_vl.sampling import penalize

    g = torch.Generator().manual_seed(0)
    V = 50
    logits = torch.randn(3, V, generator=g) * 3
    logits[0, 7] = 0.0  # zero logits: divided or multiplied, still zero
    prompts = [[1, 2, 3, 7], [4, 4, 9], [10]]
    generated = [[5, 1], [], [11, 12, 11]]
    for penalty in (1.3, 0.7):
        ref = logits.clone()
        for b in range(3):
            ids = torch.tensor([prompts[b] + generated[b]])
            ref[b] = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits[b:b + 1].clone())[0]
        in_prompt = torch.zeros(3, V, dtype=torch.bool)
        for b, p in enumerate(prompts):
            in_prompt[b, p] = True
        got = penalize(logits, _counts(generated, V), in_prompt, repetition=penalty)
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
        assert not torch.equal(got, logits)


def test_presence_and_frequency_penalties_equal_numpy():
    from ernie_vl.sampling import penalize

    g = torch.Generator().manual_seed(1)
    V = 40
    logits = torch.randn(3, V, generator=g)
    generated = [[3, 3, 3, 8], [], [0, 39, 0]]
    in_prompt = torch.zeros(3, V, dtype=torch.bool)
    in_prompt[:, 5] = True  # the prompt does not count for presence/frequency
    for presence, frequency in [(0.5, 0.0), (0.0, 0.25), (1.5, -0.75), (-2.0, 2.0)]:
        got = penalize(logits, _counts(generated, V), in_prompt, presence, frequency)
        ref = _numpy_presence_frequency(logits.numpy(), generated, presence, frequency)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=1e-6)


def test_no_penalty_changes_nothing():
    from ernie_vl.sampling import penalize

    logits = torch.randn(2, 30)
    got = penalize(logits, _counts([[1, 1], [2]], 30), torch.ones(2, 30, dtype=torch.bool))
    assert torch.equal(got, logits)


class _Row:
    def __init__(self, inputs, settings):
        self.inputs, self.settings, self.tokens, self.logprobs = inputs, settings, [], []

    def on_token(self, tok, finish, logprobs=None):
        self.tokens.append(tok)
        if logprobs is not None:
            self.logprobs.append(logprobs)
        return False


def _reference(model, ids: torch.Tensor, n: int, presence=0.0, frequency=0.0, repetition=1.0):
    """Greedy with penalties, each step a full forward over prompt + generated tokens; per step the model's own
    log-probabilities (before penalties)."""
    from transformers import RepetitionPenaltyLogitsProcessor

    seq, out, lps = ids.tolist(), [], []
    for _ in range(n):
        with torch.inference_mode():
            last = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
        lps.append(last.log_softmax(-1))
        scores = last[None].clone()
        if repetition != 1.0:
            scores = RepetitionPenaltyLogitsProcessor(repetition)(torch.tensor([seq]), scores)
        scores = torch.from_numpy(_numpy_presence_frequency(scores.numpy(), [out], presence, frequency))
        tok = int(scores[0].argmax())
        out.append(tok)
        seq.append(tok)
    return out, lps


@pytest.mark.parametrize("penalties", [dict(repetition=1.8), dict(presence=1.5, frequency=0.8)])
def test_penalized_rows_follow_the_reference_beside_plain_greedy_rows(tiny_dir, penalties):
    """In one continuous batch: a penalized text row gives the reference's tokens, the plain rows the tokens of a
    batch without any penalized row (bit-identical), and the penalty really changes the answer."""
    import ernie_vl
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.slots import ContinuousBatch

    model = ernie_vl.load_model(tiny_dir)
    reqs = requests_for(model, torch.Generator().manual_seed(3))
    n = 12
    plain = GenerationSettings(max_new_tokens=n)
    pen = plain.replace(presence_penalty=penalties.get("presence", 0.0),
                        frequency_penalty=penalties.get("frequency", 0.0),
                        repetition_penalty=penalties.get("repetition", 1.0))

    def run(settings):
        batch = ContinuousBatch(model)
        rows = [_Row(r, s) for r, s in zip(reqs, settings)]
        batch.admit(rows)
        while batch.step():
            pass
        return [r.tokens for r in rows]

    alone = run([plain] * len(reqs))
    mixed = run([pen, plain, plain, pen, plain])
    assert [mixed[i] for i in (1, 2, 4)] == [alone[i] for i in (1, 2, 4)]
    for i in (0, 3):  # the text-only rows
        expected, _ = _reference(model, reqs[i].input_ids, n, **penalties)
        assert mixed[i] == expected
    assert mixed[0] != alone[0] or mixed[3] != alone[3]
    assert len(set(alone[0])) < n  # the unpenalized answer repeats a token: something to penalize


def test_logprobs_are_the_models_own_distribution(tiny_dir):
    import ernie_vl
    from ernie_vl.engine import Engine
    from ernie_vl.generation import GenerationSettings

    model = ernie_vl.load_model(tiny_dir)
    [req] = requests_for(model, torch.Generator().manual_seed(4))[:1]
    n, k = 6, 3
    out = Engine(model).generate([req], GenerationSettings(max_new_tokens=n, logprobs=k))[0]
    plain = Engine(model).generate([req], GenerationSettings(max_new_tokens=n))[0]
    assert out.tokens == plain.tokens and plain.logprobs is None
    expected, lps = _reference(model, req.input_ids, n)
    assert out.tokens == expected and len(out.logprobs) == n
    for tok, got, lp in zip(out.tokens, out.logprobs, lps):
        assert got.logprob == pytest.approx(float(lp[tok]), abs=1e-4)
        top = lp.topk(k)
        assert [i for i, _ in got.top] == top.indices.tolist()
        assert [v for _, v in got.top] == pytest.approx(top.values.tolist(), abs=1e-4)
        assert got.top[0][0] == tok  # greedy: the chosen token is the most likely one
