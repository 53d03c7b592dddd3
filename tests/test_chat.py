"""Chat template: byte-identical rendering with transformers 5.23.0 (single/multi-turn, system, multi-image, video,
reasoning, generation prompt, enable_thinking, OpenAI parts, batches) and typed errors for malformed messages."""

from __future__ import annotations

import pytest

from ernie_vl.chat import DEFAULT_CHAT_TEMPLATE, collect_media, normalize_conversation
from ernie_vl.errors import ChatFormatError
from ernie_vl.processor import Processor
from ernie_vl.processor_files import write_processor_files
from ernie_vl.tokenizer_tiny import write_tiny_tokenizer

import transformers  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip

IMG = {"type": "image", "url": "a.png"}
VID = {"type": "video", "path": "b.mp4"}

CONVERSATIONS = {
    "text": [{"role": "user", "content": "Who are you?"}],
    "text_parts": [{"role": "user", "content": [{"type": "text", "text": "What kind of dog is this?"}, IMG]}],
    "image_first": [{"role": "user", "content": [IMG, {"type": "text", "text": "Describe."}]}],
    "multi_image": [
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, IMG, {"type": "text", "text": " and "},
                                     {"type": "image", "path": "c.jpg"}, {"type": "image", "image": "d.jpg"}]},
    ],  # fmt: skip
    "video": [{"role": "user", "content": [VID, {"type": "text", "text": "Describe the following video."}]}],
    "system_multi_turn": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, IMG]},
        {"role": "assistant", "content": "Hello! A cat."},
        {"role": "user", "content": [VID, {"type": "text", "text": "And this?"}, IMG]},
        {"role": "assistant", "content": [{"type": "text", "text": "A video "}, {"type": "text", "text": "of a dog."}]},
        {"role": "user", "content": "Thanks. 1+1=?"},
    ],
    "system_list": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "Q"},
    ],
    "reasoning_field": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "\nadd them\n"},
        {"role": "user", "content": "3+3?"},
    ],
    "reasoning_alias": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "thinking": "two plus two"},
    ],
    "think_in_content": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nsum\n</think>\n\nIt is 4."},
        {"role": "user", "content": "ok"},
    ],
    "none_fields": [
        {"role": "user", "content": "x", "name": None},
        {"role": "assistant", "content": "y", "reasoning_content": None, "tool_calls": None},
    ],
    "openai_image_url": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                     {"type": "text", "text": "What is it?"}]},
    ],  # fmt: skip
    "unicode": [{"role": "user", "content": "naïve café 你好 🙂 <b>tags</b> {{ not jinja }}"}],
    # placeholder parts name no media: rendered, then the processor takes images=/videos= (test_processor)
    "placeholders": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Compare with "},
                                                  {"type": "image"}, {"type": "video"}, {"type": "text", "text": "?"}]}],
    "placeholder_openai_types": [{"role": "user", "content": [{"type": "image_url"}, {"type": "video_url"},
                                                              {"type": "text", "text": "What is it?"}]}],
    "placeholders_beside_media": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [IMG, {"type": "image"}, {"type": "text", "text": "Same?"}]},
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": [{"type": "video"}, VID, {"type": "text", "text": "And these?"}]},
    ],
}

TEMPLATE_KWARGS = [
    {"add_generation_prompt": True},
    {"add_generation_prompt": False},
    {"add_generation_prompt": True, "enable_thinking": True},
    {"add_generation_prompt": True, "enable_thinking": False},
    {},
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat_ckpt")
    write_tiny_tokenizer(d)
    write_processor_files(d)
    return d


@pytest.fixture(scope="module")
def procs(folder):
    return transformers.AutoProcessor.from_pretrained(str(folder)), Processor.from_pretrained(folder)


@pytest.mark.parametrize("kwargs", TEMPLATE_KWARGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "none")
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_render_byte_identical(procs, name, kwargs):
    ref, ours = procs
    conv = CONVERSATIONS[name]
    expected = ref.apply_chat_template(conv, tokenize=False, **kwargs)
    assert ours.apply_chat_template(conv, tokenize=False, **kwargs) == expected


def test_batched_render(procs):
    ref, ours = procs
    batch = [CONVERSATIONS["text"], CONVERSATIONS["system_multi_turn"]]
    assert ours.apply_chat_template(batch, add_generation_prompt=True) == ref.apply_chat_template(batch, add_generation_prompt=True)


def test_template_written_is_clean(folder):
    text = (folder / "chat_template.jinja").read_text()
    assert text == DEFAULT_CHAT_TEMPLATE
    assert "<|end_of_sentence |>" not in text and "'\n            '" not in text


def test_expected_prompt_shapes(procs):
    _, ours = procs
    s = ours.apply_chat_template(CONVERSATIONS["text_parts"], add_generation_prompt=True)
    assert s == (
        "<|begin_of_sentence|>User: What kind of dog is this?Picture 1:<|IMAGE_START|><|IMAGE_PLACEHOLDER|>"
        "<|IMAGE_END|>\nAssistant: <think>\n\n</think>\n\n"
    )
    s = ours.apply_chat_template(CONVERSATIONS["system_multi_turn"])
    assert "Picture 1:" in s and "Video 1:" in s and "Picture 2:" in s and "Picture 3" not in s
    assert s.startswith("<|begin_of_sentence|>You are a helpful assistant.\nUser: Hi")
    assert "\nAssistant: Hello! A cat.<|end_of_sentence|>User: " in s
    s = ours.apply_chat_template(CONVERSATIONS["reasoning_field"])
    assert "\nAssistant: <think>\nadd them\n</think>\n\n4<|end_of_sentence|>" in s


def test_collect_media_order():
    msgs = normalize_conversation(CONVERSATIONS["system_multi_turn"] + CONVERSATIONS["openai_image_url"])
    images, videos = collect_media(msgs)
    assert images == ["a.png", "a.png", "data:image/png;base64,AAAA"]
    assert videos == ["b.mp4"]
    vid_url = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "v.mp4"}}]}]
    assert collect_media(normalize_conversation(vid_url)) == ([], ["v.mp4"])
    assert collect_media(normalize_conversation(CONVERSATIONS["placeholders"])) == ([], [])
    assert collect_media(normalize_conversation(CONVERSATIONS["placeholders_beside_media"])) == (["a.png"], ["b.mp4"])


@pytest.mark.parametrize(
    "conv, match",
    [
        ([{"role": "user", "content": [{"type": "audio", "path": "x.wav"}]}], "unknown type 'audio'"),
        ([{"role": "user", "content": [{"text": "no type"}]}], "'type'"),
        ([{"role": "user", "content": [{"type": "text"}]}], "string 'text'"),
        (["just a string"], "expected a dict"),
        ([{"content": "no role"}], "'role'"),
        ([{"role": "user", "content": 42}], "string or a list"),
        ([{"role": "assistant", "content": [IMG]}], "assistant messages cannot hold"),
    ],
)
def test_malformed_messages(procs, conv, match):
    _, ours = procs
    with pytest.raises(ChatFormatError, match=match) as e:
        ours.apply_chat_template(conv, source="sample 42")
    assert isinstance(e.value, ValueError) and "sample 42" in str(e.value)
