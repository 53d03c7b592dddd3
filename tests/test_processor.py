"""Processor: parity with transformers 5.23.0 ``Ernie4_5_VLMoeProcessor`` loaded from the same tiny checkpoint folder
(identical input_ids, masks, token types, grids; pixel values within 1e-4), chat-template tokenization with images and
videos, and typed errors."""

from __future__ import annotations

from functools import partial

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ernie_vl.bench.preprocess import write_video
from ernie_vl.errors import ChatFormatError, ImageError, PlaceholderMismatchError
from ernie_vl.processor import PACKAGED_FONT, Processor, ProcessorOutput
from ernie_vl.processor_files import write_processor_files
from ernie_vl.tokenizer_tiny import write_tiny_tokenizer

import transformers  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip
from transformers.video_utils import load_video  # noqa: E402

IMG_TOKEN = "<|IMAGE_PLACEHOLDER|>"
VID_TOKEN = "<|VIDEO_PLACEHOLDER|>"
SMALL_VIDEO = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("proc_ckpt")
    write_tiny_tokenizer(d)
    write_processor_files(d)
    return d


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("proc_media")
    rng = np.random.default_rng(0)
    imgs = []
    for i, (h, w) in enumerate([(60, 80), (200, 150), (33, 400)]):
        p = d / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        imgs.append(str(p))
    vids = [
        str(write_video(d / "v0.mp4", 40, 64, 48, 25, "libx264", "mp4", seed=1)),
        str(write_video(d / "v1.avi", 7, 80, 60, 30, "mpeg4", "avi", seed=2)),
    ]
    return imgs, vids


def _pyav_fetch_videos(self, video_url_or_urls, sample_indices_fn=None):
    """transformers' fetch_videos with its PyAV backend (its default, torchcodec, is not installed here)."""
    if isinstance(video_url_or_urls, list):
        return list(zip(*[_pyav_fetch_videos(self, x, sample_indices_fn) for x in video_url_or_urls]))
    return load_video(video_url_or_urls, backend="pyav", sample_indices_fn=sample_indices_fn)


@pytest.fixture(scope="module")
def ref(folder):
    proc = transformers.AutoProcessor.from_pretrained(str(folder), video_kwargs={})
    vp = proc.video_processor
    vp.size = {"shortest_edge": SMALL_VIDEO["min_pixels"], "longest_edge": SMALL_VIDEO["max_pixels"]}
    vp.fetch_videos = partial(_pyav_fetch_videos, vp)
    return proc


@pytest.fixture(scope="module")
def ours(folder):
    return Processor.from_pretrained(folder, video_kwargs=SMALL_VIDEO)


def assert_outputs_equal(a, b, keys=None):
    assert list(a.keys()) == list(b.keys())
    for k in keys or a.keys():
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            assert x.shape == y.shape and y.dtype == x.dtype
            assert (x - y).abs().max().item() <= 1e-4, k
        elif isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and torch.equal(x, y), k
        else:
            assert x == y, k


def _all_frames(path):
    with av.open(path) as c:
        s = c.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)]), float(s.average_rate)


# ------------------------------------------------------------------------------------------------------------ loading
def test_both_load_the_tiny_folder(folder, ours):
    proc = transformers.AutoProcessor.from_pretrained(str(folder))
    assert type(proc).__name__ == "Ernie4_5_VLMoeProcessor"
    for attr in ["image_token_id", "image_start_token_id", "image_end_token_id", "video_token_id",
                 "video_start_token_id", "video_end_token_id", "image_token", "video_token"]:  # fmt: skip
        assert getattr(ours, attr) == getattr(proc, attr), attr
    assert ours.chat_template == proc.chat_template


def test_lead_tiny_checkpoint_loads(tiny_dir):
    """The folder written by `ernie-vl make-tiny` (ernie_vl.tiny) loads in both."""
    transformers.AutoProcessor.from_pretrained(str(tiny_dir))
    p = Processor.from_pretrained(tiny_dir)
    assert p.image_token_id is not None


def test_missing_font_is_an_error(tmp_path):
    write_tiny_tokenizer(tmp_path)
    write_processor_files(tmp_path)
    (tmp_path / "Roboto-Regular.ttf").unlink()
    with pytest.raises(FileNotFoundError, match="font"):
        Processor.from_pretrained(tmp_path)
    assert Processor.from_pretrained(tmp_path, font=PACKAGED_FONT).video_processor.drawer is not None


# ------------------------------------------------------------------------------------------------------------ __call__
@pytest.mark.parametrize("return_tensors", [None, "pt"])
def test_text_only_batch(ref, ours, return_tensors):
    texts = ["Hello world", "A longer sentence with digits 12345 and <think>tags</think>.", ""]
    a = ref(text=texts, padding=True, return_tensors=return_tensors)
    b = ours(text=texts, padding=True, return_tensors=return_tensors)
    assert_outputs_equal(a, b)
    a = ref(text=texts, padding="max_length", max_length=40, return_tensors=return_tensors)
    b = ours(text=texts, padding="max_length", max_length=40, return_tensors=return_tensors)
    assert_outputs_equal(a, b)
    assert isinstance(b, ProcessorOutput)


@pytest.mark.parametrize("return_tensors", [None, "pt"])
def test_images(ref, ours, media, return_tensors):
    imgs, _ = media
    texts = [f"Look {IMG_TOKEN} and {IMG_TOKEN}!", f"<|IMAGE_START|>{IMG_TOKEN}<|IMAGE_END|> what?"]
    a = ref(text=texts, images=imgs, padding=True, return_tensors=return_tensors)
    b = ours(text=texts, images=imgs, padding=True, return_tensors=return_tensors)
    assert_outputs_equal(a, b)
    assert list(b.keys()) == ["input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw",
                              "moe_mm_token_type_ids"]  # fmt: skip
    ids = torch.as_tensor(b["input_ids"][1])
    n = int((b["image_grid_thw"][2].prod() // 4).item())
    assert int((ids == ours.image_token_id).sum()) == n
    moe = torch.as_tensor(b["moe_mm_token_type_ids"][1])
    assert int((moe == 1).sum()) == n + 2  # start/end count for MoE routing only
    pil = [Image.open(p) for p in imgs]
    assert_outputs_equal(ref(text=texts, images=pil, padding=True), ours(text=texts, images=pil, padding=True))


def test_videos_and_images(ref, ours, media):
    imgs, vids = media
    frames0, fps0 = _all_frames(vids[0])
    frames1, fps1 = _all_frames(vids[1])
    text = [f"{VID_TOKEN} then {IMG_TOKEN}", f"{VID_TOKEN}?"]
    md = [{"total_num_frames": len(frames0), "fps": fps0}, {"total_num_frames": len(frames1), "fps": fps1}]
    a = ref(text=text, images=imgs[:1], videos=[frames0, frames1], video_metadata=md, padding=True, return_tensors="pt")
    b = ours(text=text, images=imgs[:1], videos=vids, padding=True, return_tensors="pt")
    assert_outputs_equal(a, b)
    assert list(b.keys())[-3:] == ["pixel_values_videos", "video_grid_thw", "moe_mm_token_type_ids"]
    assert int((b["mm_token_type_ids"] == 2).sum()) == int((b["video_grid_thw"].prod(-1) // 8).sum())
    # sampling kwargs pass through
    a = ref(text=text[1:], videos=[frames0], video_metadata=md[:1], num_frames=16, return_tensors="pt")
    b = ours(text=text[1:], videos=vids[:1], num_frames=16, return_tensors="pt", return_metadata=True)
    assert_outputs_equal(a, {k: v for k, v in b.items() if k != "video_metadata"})
    assert len(b["video_metadata"][0].frames_indices) == 16


def test_apply_chat_template_tokenized(ref, ours, media):
    imgs, vids = media
    conv = [
        {"role": "system", "content": "Be precise."},
        {"role": "user", "content": [{"type": "image", "url": imgs[0]}, {"type": "text", "text": "and"},
                                     {"type": "video", "path": vids[0]}, {"type": "image", "path": imgs[1]},
                                     {"type": "text", "text": "What changed?"}]},
    ]  # fmt: skip
    kw = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    assert_outputs_equal(ref.apply_chat_template(conv, **kw), ours.apply_chat_template(conv, **kw))
    conv2 = [{"role": "user", "content": [{"type": "video", "video": vids[1]}, {"type": "text", "text": "Describe."}]}]
    batch = [conv, conv2]
    a = ref.apply_chat_template(batch, **kw, processor_kwargs={"padding": True, "fps": 10})
    b = ours.apply_chat_template(batch, **kw, processor_kwargs={"padding": True, "fps": 10})
    assert_outputs_equal(a, b)
    # enable_thinking is a template variable; ids only (no return_dict) is a list of lists
    a = ref.apply_chat_template(conv2, add_generation_prompt=True, tokenize=True, enable_thinking=True)
    b = ours.apply_chat_template(conv2, add_generation_prompt=True, tokenize=True, enable_thinking=True)
    assert a == b and isinstance(b, list) and isinstance(b[0], list)


def test_placeholder_parts_rendered_then_media_given_apart(ref, ours, media):
    """The common pattern: render ``{"type": "image"}``/``{"type": "video"}`` placeholders with tokenize=False
    (byte-identical to transformers), then call the processor with images=/videos=: identical ids and pixels."""
    imgs, vids = media
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "video"},
                                         {"type": "image"}, {"type": "text", "text": "What changed?"}]}]
    for kw in ({}, {"enable_thinking": True}):
        text = ref.apply_chat_template(conv, add_generation_prompt=True, tokenize=False, **kw)
        assert ours.apply_chat_template(conv, add_generation_prompt=True, tokenize=False, **kw) == text
    assert text.count(IMG_TOKEN) == 2 and text.count(VID_TOKEN) == 1
    frames0, fps0 = _all_frames(vids[0])
    md = [{"total_num_frames": len(frames0), "fps": fps0}]
    a = ref(text=text, images=imgs[:2], videos=[frames0], video_metadata=md, return_tensors="pt")
    b = ours(text=text, images=imgs[:2], videos=vids[:1], return_tensors="pt")
    assert_outputs_equal(a, b)
    c = ours.apply_chat_template(conv, add_generation_prompt=True, enable_thinking=True, tokenize=True,
                                 return_dict=True, return_tensors="pt", images=imgs[:2], videos=vids[:1])
    assert_outputs_equal(a, c)
    with pytest.raises(PlaceholderMismatchError, match="no images"):
        ours.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)


def test_batch_decode(ref, ours):
    ids = ours(text=["Hello there <think>x</think> 42", "<|begin_of_sentence|>User: hi"], padding=True)["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(ids, skip_special_tokens=skip) == ref.batch_decode(ids, skip_special_tokens=skip)
        assert ours.decode(ids[0], skip_special_tokens=skip) == ref.decode(ids[0], skip_special_tokens=skip)


def test_num_tokens_helpers(ref, ours):
    data = ref._get_num_multimodal_tokens(image_sizes=[(100, 100), (300, 100), (500, 30)])
    assert [ours.num_image_tokens(h, w) for h, w in [(100, 100), (300, 100), (500, 30)]] == data["num_image_tokens"]


def test_positions(ours, media):
    imgs, _ = media
    out = ours(text=[f"a {IMG_TOKEN} b", "c"], images=imgs[:1], padding=True, return_tensors="pt", return_positions=True)
    b, s = out["input_ids"].shape
    assert out["position_ids"].shape == (3, b, s) and out["rope_deltas"].shape == (b, 1)


# ------------------------------------------------------------------------------------------------------------ errors
def test_errors(ours, media):
    imgs, vids = media
    with pytest.raises(PlaceholderMismatchError, match="1 <|IMAGE_PLACEHOLDER|>") as e:
        ours(text=f"x {IMG_TOKEN}", images=imgs[:2], source="sample 3")
    assert "sample 3" in str(e.value) and isinstance(e.value, ValueError)
    with pytest.raises(PlaceholderMismatchError, match="no images"):
        ours(text=f"x {IMG_TOKEN}")
    with pytest.raises(PlaceholderMismatchError, match="video"):
        ours(text="x", videos=vids[:1])
    with pytest.raises(ValueError, match="at least one input"):
        ours()
    with pytest.raises(TypeError, match="text is required"):
        ours(images=imgs[:1])
    with pytest.raises(ValueError, match="string or list of strings"):
        ours(text=5)
    with pytest.raises(TypeError, match="unexpected processor arguments"):
        ours(text="x", bogus=1)
    with pytest.raises(PlaceholderMismatchError, match="truncation"):
        ours(text=f"x {IMG_TOKEN} y", images=imgs[:1], truncation=True, max_length=5)
    with pytest.raises(ImageError, match="sample 9: image 0"):
        ours(text=f"{IMG_TOKEN}", images=[imgs[0] + ".missing"], source="sample 9")
    with pytest.raises(ChatFormatError, match="unknown type"):
        ours.apply_chat_template([{"role": "user", "content": [{"type": "file", "path": "x"}]}], tokenize=True)


def test_processor_pickles(ours, media):
    """Ray ships processors to actors: a pickled processor gives the same outputs."""
    import pickle

    imgs, vids = media
    clone = pickle.loads(pickle.dumps(ours))
    a = ours(text=f"{IMG_TOKEN}{VID_TOKEN}", images=imgs[:1], videos=vids[1:], return_tensors="pt")
    b = clone(text=f"{IMG_TOKEN}{VID_TOKEN}", images=imgs[:1], videos=vids[1:], return_tensors="pt")
    assert_outputs_equal(a, b)


def test_processed_media_cache_reuses_a_medium_with_the_same_outputs(tmp_path):
    """The same image bytes, the same video file with the same frame policy: processed once, outputs identical to
    processing every time; another frame policy or other bytes are processed anew."""
    import io

    import av
    import numpy as np
    from PIL import Image

    from ernie_vl.media_cache import ProcessedMediaCache

    d = tmp_path / "ckpt"
    write_processor_files(d)
    from ernie_vl.tokenizer_tiny import write_tiny_tokenizer

    write_tiny_tokenizer(d)
    proc = Processor.from_pretrained(d)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(buf, "PNG")
    image = buf.getvalue()
    video = tmp_path / "v.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)

    def ask(question, **kw):
        msgs = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "video", "video": str(video)},
                                             {"type": "text", "text": question}]}]
        return proc.prepare(msgs, video_sampling=kw, with_metadata=True)

    plain = [ask(q, num_frames=4) for q in ("a?", "b?")]
    proc.media_cache = ProcessedMediaCache()
    cached = [ask(q, num_frames=4) for q in ("a?", "b?")]
    assert proc.media_cache.hits == 2 and len(proc.media_cache) == 2  # the second question took both from the cache
    for (x, mx), (y, my) in zip(plain, cached):
        assert torch.equal(x.images.pixels, y.images.pixels) and torch.equal(x.videos.pixels, y.videos.pixels)
        assert x.images.keys == y.images.keys and torch.equal(x.input_ids, y.input_ids)
        assert [m.frames_indices for m in mx] == [m.frames_indices for m in my]
    ask("c?", num_frames=6)  # another frame policy: the video is processed again
    assert proc.media_cache.hits == 3 and len(proc.media_cache) == 3
