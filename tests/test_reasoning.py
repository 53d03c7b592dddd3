"""The reasoning/answer split, whole and streamed: every way of cutting a text into pieces gives the whole split."""

import itertools

import pytest

from ernie_vl.reasoning import ReasoningStream, Split, split_reasoning

TEXTS = [
    "The square is red.\n</think>\n\nRed",
    "<think>\nLet me look.\nThe square is red.\n</think>\n\nThe answer is B.",
    "thinking until the budget ends, no close marker\n",
    "a </thi that is not a marker\n\nstill thinking</think>answer with </think> inside",
    "\n\n</think>\n\nanswer only",
    " The color is red.\n</think>B",  # a tokenizer's first piece starts with a space
    " \n<think>\n x</thi",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_whole_split(text):
    s = split_reasoning(text, thinking=True)
    if "</think>" in text:
        assert s.closed and "</think>" not in s.reasoning
        assert text.endswith(s.answer)
    else:
        assert not s.closed and s.answer == ""
    off = split_reasoning(text, thinking=False)
    assert off.reasoning is None and off.answer == text


def test_whole_split_values():
    s = split_reasoning("<think>\nLet me look.\n</think>\n\nB", thinking=True)
    assert (s.reasoning, s.answer, s.closed) == ("Let me look.", "B", True)
    s = split_reasoning("Let me look at the", thinking=True)
    assert (s.reasoning, s.answer, s.closed) == ("Let me look at the", "", False)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("thinking", [True, False])
def test_stream_equals_whole(text, thinking):
    whole = split_reasoning(text, thinking)
    cuts_seen = 0
    for n_cuts in (1, 2, 3):
        for cuts in itertools.combinations(range(1, len(text)), min(n_cuts, max(len(text) - 1, 0))):
            bounds = (0, *cuts, len(text))
            stream, r, a = ReasoningStream(thinking), "", ""
            for lo, hi in zip(bounds, bounds[1:]):
                dr, da = stream.feed(text[lo:hi])
                r, a = r + dr, a + da
            dr, da = stream.finish()
            r, a = r + dr, a + da
            assert (r, a) == (whole.reasoning or "", whole.answer), (text, bounds)
            cuts_seen += 1
            if n_cuts > 1 and cuts_seen > 3000:
                break
    assert cuts_seen > 0


def test_scripted_checkpoint_writes_its_script(tmp_path):
    """The crafted checkpoint the reasoning tests use really generates its script through the model and engine."""
    from scripted_model import make_scripted

    from ernie_vl.engine import Engine
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.processor import Processor
    from ernie_vl.weights import load_model

    path = make_scripted(tmp_path / "ckpt", " The color is red.\n</think>B")
    proc, model = Processor.from_pretrained(path), load_model(path)
    x = proc.prepare([{"role": "user", "content": "What colour is the square?"}], enable_thinking=True)
    out = Engine(model).generate([x], GenerationSettings.from_checkpoint(path))[0]
    text = proc.tokenizer.decode(out.tokens, skip_special_tokens=True)
    assert out.finish_reason == "stop"
    assert split_reasoning(text, thinking=True) == Split("The color is red.", "B", True)
    with pytest.raises(ValueError, match="repeat"):
        make_scripted(tmp_path / "bad", "red red red")


def test_finish_reason_answer_budget():
    from ernie_vl.generation import GenerationSettings, finish_reason

    s = GenerationSettings(max_new_tokens=10, eos_token_id=(2,), max_answer_tokens=3, think_end_token_id=7)
    assert finish_reason(5, 4, s, answer_tokens=None) is None  # still reasoning
    assert finish_reason(5, 4, s, answer_tokens=2) is None
    assert finish_reason(5, 5, s, answer_tokens=3) == "length"
    assert finish_reason(2, 5, s, answer_tokens=3) == "stop"  # EOS first
    assert finish_reason(5, 10, s, answer_tokens=None) == "length"  # the whole budget still bounds the reasoning
    assert finish_reason(5, 5, s.replace(max_answer_tokens=None, think_end_token_id=None), answer_tokens=3) is None
    with pytest.raises(ValueError, match="think_end_token_id"):
        GenerationSettings(max_answer_tokens=3)


ANSWER_SCRIPT = " Red square.\n</think>Answer is B"


@pytest.fixture(scope="module")
def answer_script_model(tmp_path_factory):
    from scripted_model import make_scripted

    return make_scripted(tmp_path_factory.mktemp("scripted"), ANSWER_SCRIPT)


@pytest.mark.parametrize("cap", [None, 0, 2, 5, 6])
def test_answer_budget_ends_a_reasoning_row_after_its_close_marker(answer_script_model, cap):
    """The engine's one stopping rule: a row with `max_answer_tokens` ends that many tokens after its `</think>`, the
    reasoning before it untouched; the same model without a cap writes the whole script."""
    from ernie_vl.engine import Engine
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.processor import Processor
    from ernie_vl.weights import load_model

    path = answer_script_model
    proc, model = Processor.from_pretrained(path), load_model(path)
    tok = proc.tokenizer
    ids = tok.encode(ANSWER_SCRIPT)
    k = ids.index(tok.token_to_id("</think>"))
    x = proc.prepare([{"role": "user", "content": "What colour is the square?"}], enable_thinking=True)
    base = GenerationSettings.from_checkpoint(path)
    settings = base if cap is None else base.replace(max_answer_tokens=cap, think_end_token_id=ids[k])
    out = Engine(model).generate([x, x], settings)
    answer_len = len(ids) - k - 1  # tokens after </think>, then EOS
    if cap is None or cap > answer_len:
        want, reason = ids + list(base.eos_token_id[:1]), "stop"
    else:
        want, reason = ids[: k + 1 + cap], "length"
    for o in out:
        assert (o.tokens, o.finish_reason) == (want, reason)
        split = split_reasoning(tok.decode(o.tokens, skip_special_tokens=True), thinking=True)
        assert split.reasoning == "Red square." and split.closed
        assert split.answer == tok.decode(want[k + 1:], skip_special_tokens=True)
    assert [o.tokens for o in Engine(model).generate([x], base)] == [ids + list(base.eos_token_id[:1])]
