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
