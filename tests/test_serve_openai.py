"""The OpenAI fields clients and harnesses rely on, end to end: a real local Ray Serve application, the `openai` client.

Reasoning: a crafted checkpoint (`scripted_model.make_scripted`) that, after a prompt ending in ``<think>``, writes
" The color is red.\\n</think>B" and EOS through the real model code — so the server's split into reasoning and answer
is checked against a known text, not a random model's noise. Log-probabilities, ``n``, penalties, large
``max_tokens`` and a large photo run against the same server and against the embedded tiny checkpoint, with expected
values from the batch engine in this process.
"""

import base64
import io
import json
import struct
import zlib

import pytest

from serve_support import ray_serve

pytestmark = pytest.mark.ray

import httpx  # noqa: E402 - part of the test extra: a missing one must fail, not skip
import openai  # noqa: E402

SCRIPT = " The color is red.\n</think>B"
THINK = {"chat_template_kwargs": {"enable_thinking": True}}
QUESTION = [{"role": "user", "content": "What colour is the square?"}]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    from scripted_model import make_scripted

    return make_scripted(tmp_path_factory.mktemp("scripted") / "ckpt", SCRIPT)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random checkpoint whose context (8192) holds the largest image its processor makes (~6,200 tokens)."""
    from ernie_vl.config import named_config
    from ernie_vl.tiny import make_tiny

    cfg = named_config("tiny")
    cfg.text.max_position_embeddings = 8192
    return make_tiny(tmp_path_factory.mktemp("tiny") / "ckpt", config=cfg)


@pytest.fixture(scope="module")
def server(scripted, tiny):
    from ray import serve

    from serve.app import build_app

    with ray_serve() as port:
        common = {"num_cpus": 0.5, "torch_threads": 1}
        serve.run(build_app({**common, "model": str(scripted), "served_model_name": "scripted"}),
                  name="scripted", route_prefix="/")
        serve.run(build_app({**common, "model": str(tiny), "served_model_name": "tiny"}), name="tiny",
                  route_prefix="/tiny")
        yield f"http://127.0.0.1:{port}"


def client(base: str, path: str = "") -> "openai.OpenAI":
    return openai.OpenAI(base_url=base + path + "/v1", api_key="unused", max_retries=0, timeout=120)


def _field(obj, name):
    """An extra field of an openai-client object, read as a user would (attribute access; model_extra behind it)."""
    return getattr(obj, name, None)


# ------------------------------------------------------------------------------------------------------ reasoning


def _script_ids(scripted) -> list[int]:
    from ernie_vl.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(scripted).encode(SCRIPT)


def test_reasoning_in_both_field_names_non_streamed(server, scripted):
    resp = client(server).chat.completions.create(model="scripted", messages=QUESTION, max_tokens=32,
                                                  extra_body=THINK)
    msg = resp.choices[0].message
    assert msg.content == "B"
    assert _field(msg, "reasoning") == "The color is red."
    assert _field(msg, "reasoning_content") == "The color is red."
    assert msg.model_extra == {"reasoning": "The color is red.", "reasoning_content": "The color is red."}
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == len(_script_ids(scripted)) + 1  # the script's tokens and EOS


def test_reasoning_in_both_field_names_streamed(server):
    chunks = list(client(server).chat.completions.create(model="scripted", messages=QUESTION, max_tokens=32,
                                                         extra_body=THINK, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(_field(d, "reasoning") or "" for d in deltas)
    assert reasoning == "".join(_field(d, "reasoning_content") or "" for d in deltas) == "The color is red."
    assert "".join(d.content or "" for d in deltas) == "B"
    assert len([d for d in deltas if _field(d, "reasoning")]) > 1  # streamed piece by piece
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_thinking_off_has_no_reasoning_and_the_budget_cut_is_all_reasoning(server, scripted):
    from ernie_vl.tokenizer import Tokenizer

    off = client(server).chat.completions.create(model="scripted", messages=QUESTION, max_tokens=32)
    assert _field(off.choices[0].message, "reasoning") is None
    cut = client(server).chat.completions.create(model="scripted", messages=QUESTION, max_tokens=3, extra_body=THINK)
    assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.content == ""
    expected = Tokenizer.from_pretrained(scripted).decode(_script_ids(scripted)[:3]).strip()
    assert expected and _field(cut.choices[0].message, "reasoning") == expected


def test_earlier_reasoning_is_accepted_back_in_either_name(server, scripted):
    from ernie_vl.processor import Processor

    proc = Processor.from_pretrained(scripted)
    turn = {"role": "assistant", "content": "B"}
    follow = {"role": "user", "content": "Why?"}
    with_reasoning = proc.prepare([*QUESTION, {**turn, "reasoning_content": "The color is red."}, follow],
                                  enable_thinking=True).num_prompt_tokens
    without = proc.prepare([*QUESTION, turn, follow], enable_thinking=True).num_prompt_tokens
    assert with_reasoning > without
    for name in ("reasoning", "reasoning_content"):
        resp = client(server).chat.completions.create(
            model="scripted", max_tokens=32, extra_body=THINK,
            messages=[*QUESTION, {**turn, name: "The color is red."}, follow])
        assert resp.usage.prompt_tokens == with_reasoning
        assert _field(resp.choices[0].message, "reasoning") == "The color is red."


# ------------------------------------------------------------------------------------------------------ logprobs, n


def test_logprobs_non_streamed_and_streamed(server, scripted):
    from ernie_vl.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(scripted)
    ids = tok.encode(SCRIPT)
    kw = dict(model="scripted", messages=QUESTION, max_tokens=32, extra_body=THINK, logprobs=True, top_logprobs=2)
    resp = client(server).chat.completions.create(**kw)
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens == len(ids) + 1  # the script, then EOS
    assert [e.token for e in content[:-1]] == [tok.decode([i]) for i in ids]
    assert "".join(e.token for e in content[:-1]) == SCRIPT
    assert all(bytes(e.bytes) == e.token.encode() for e in content)
    for e in content:  # the crafted chain: each next token has probability ~1
        assert -1e-3 < e.logprob <= 0 and len(e.top_logprobs) == 2
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert e.top_logprobs[1].logprob < -10
    chunks = list(client(server).chat.completions.create(**kw, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
    plain = client(server).chat.completions.create(model="scripted", messages=QUESTION, max_tokens=4)
    assert plain.choices[0].logprobs is None


def test_n_choices_non_streamed_and_streamed(server):
    kw = dict(model="scripted", messages=QUESTION, max_tokens=32, extra_body=THINK, n=3)
    resp = client(server).chat.completions.create(**kw)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert all(c.message.content == "B" and _field(c.message, "reasoning") == "The color is red."
               for c in resp.choices)
    one = client(server).chat.completions.create(**{**kw, "n": 1})
    assert resp.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert resp.usage.prompt_tokens == one.usage.prompt_tokens
    chunks = list(client(server).chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    for i in range(3):
        deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].index == i]
        assert "".join(d.content or "" for d in deltas) == "B"
        assert "".join(_field(d, "reasoning") or "" for d in deltas) == "The color is red."
    assert chunks[-1].usage.completion_tokens == resp.usage.completion_tokens


def test_sampled_choices_are_independent_and_reproducible(server):
    kw = dict(model="tiny", messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=12,
              temperature=1.0, seed=7, n=4)
    a = [c.message.content for c in client(server, "/tiny").chat.completions.create(**kw).choices]
    b = [c.message.content for c in client(server, "/tiny").chat.completions.create(**kw).choices]
    assert a == b and len(set(a)) > 1


# ------------------------------------------------------------------------------------------------------ penalties


@pytest.fixture(scope="module")
def engine_answer(tiny):
    """The batch engine in this process on the tiny checkpoint, with the settings given."""
    import ernie_vl
    from ernie_vl.engine import Engine
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.tokenizer import Tokenizer

    path = tiny
    model, proc, tok = ernie_vl.load_model(path), ernie_vl.Processor.from_pretrained(path), Tokenizer.from_pretrained(path)
    engine = Engine(model, reuse=False)

    def answer(messages, **settings):
        out = engine.generate([proc.prepare(messages)], GenerationSettings.from_checkpoint(path, **settings))[0]
        return tok.decode(out.tokens, skip_special_tokens=True)

    return answer


@pytest.mark.parametrize("penalties", [{"presence_penalty": 1.5, "frequency_penalty": 1.0},
                                       {"repetition_penalty": 1.6}])
def test_penalties_change_the_answer_as_the_engine_does(server, engine_answer, penalties):
    messages = [{"role": "user", "content": "Repeat after me: la la la la."}]
    plain = client(server, "/tiny").chat.completions.create(model="tiny", messages=messages, max_tokens=24,
                                                            temperature=0)
    openai_named = {k: v for k, v in penalties.items() if k != "repetition_penalty"}
    vllm_named = {k: v for k, v in penalties.items() if k == "repetition_penalty"}  # not an OpenAI parameter
    resp = client(server, "/tiny").chat.completions.create(model="tiny", messages=messages, max_tokens=24,
                                                           temperature=0, **openai_named, extra_body=vllm_named)
    assert plain.choices[0].message.content == engine_answer(messages, max_new_tokens=24)
    assert resp.choices[0].message.content == engine_answer(messages, max_new_tokens=24, **penalties)
    assert resp.choices[0].message.content != plain.choices[0].message.content


# ------------------------------------------------------------------------------------------------------ limits


def test_max_tokens_up_to_the_context_and_the_same_error_beyond(server):
    resp = client(server).chat.completions.create(model="scripted", messages=QUESTION, max_tokens=32000,
                                                  extra_body=THINK)
    assert resp.choices[0].message.content == "B" and resp.choices[0].finish_reason == "stop"
    r = httpx.post(server + "/v1/chat/completions", timeout=60,
                   json={"messages": QUESTION, "max_tokens": 32768})  # the tiny context is 32768 tokens
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "context_length_exceeded"
    assert "context of 32768 tokens" in err["message"] and err["param"] == "max_tokens"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's signature), with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_large_photo_is_accepted_and_a_decompression_bomb_refused(server, engine_answer):
    import numpy as np
    from PIL import Image

    h, w = 4000, 5000
    y, x = np.mgrid[0:h, 0:w]
    pixels = np.stack([(x * 255 // w), (y * 255 // h), ((x // 250 + y // 250) % 2) * 200], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    photo = buf.getvalue()
    question = {"type": "text", "text": "What is in the picture?"}
    resp = client(server, "/tiny").chat.completions.create(model="tiny", max_tokens=6, temperature=0, messages=[
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(photo).decode()}},
            question]}])
    expected = engine_answer([{"role": "user", "content": [{"type": "image", "image": photo}, question]}],
                             max_new_tokens=6)
    assert resp.choices[0].message.content == expected
    assert 5000 < resp.usage.prompt_tokens < 6400  # resized by the processor to its pixel budget (~4.8 M pixels)

    bomb = "data:image/png;base64," + base64.b64encode(_png_header_only(20000, 20000)).decode()
    r = httpx.post(server + "/tiny/v1/chat/completions", timeout=60, json={"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": bomb}}]}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_too_large", r.text
    assert json.dumps(r.json()).count("pixels") >= 1
