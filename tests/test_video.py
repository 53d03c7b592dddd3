"""Video processing: parity with transformers 5.23.0 (Ernie4_5_VLMoeVideoProcessor fed by transformers' PyAV reader)
on generated videos of 1–400 frames, 24/25/30 fps, H.264/MPEG-4/VP9 in mp4/avi/mkv/webm, odd sizes; sampling
rules; timestamps; metadata; errors.

Videos are small (≤ 97×64 px) and most parity cases use a small ``size`` so that the whole file runs in seconds; one
case runs the checkpoint defaults (upscaling to 234 416 px per frame).
"""

from __future__ import annotations

import io
from functools import partial

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ernie_vl.bench.preprocess import write_video
from ernie_vl.errors import VideoError
from ernie_vl.processor import PACKAGED_FONT
from ernie_vl.video import VideoProcessor, VideoProcessorConfig
from ernie_vl.video_decode import OpenedVideo
from ernie_vl.video_sampling import VideoMetadata, sample_frame_indices
from ernie_vl.video_timestamps import timestamp_texts

import transformers  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip
from transformers import Ernie4_5_VLMoeVideoProcessor  # noqa: E402
from transformers.video_utils import VideoMetadata as HFVideoMetadata  # noqa: E402
from transformers.video_utils import load_video  # noqa: E402

SMALL = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
FONT = str(PACKAGED_FONT)

# name: (frames, width, height, fps, codec, container, pix_fmt)
VIDEOS = {
    "n1_h264_24.mp4": (1, 64, 48, 24, "libx264", "mp4", "yuv420p"),
    "n7_mpeg4_25_odd.avi": (7, 97, 61, 25, "mpeg4", "avi", "yuv420p"),
    "n16_h264_30.mkv": (16, 96, 64, 30, "libx264", "matroska", "yuv420p"),
    "n181_h264_24_odd444.mp4": (181, 97, 61, 24, "libx264", "mp4", "yuv444p"),
    "n181_mpeg4_30.avi": (181, 80, 60, 30, "mpeg4", "avi", "yuv420p"),
    "n400_h264_30.mp4": (400, 80, 60, 30, "libx264", "mp4", "yuv420p"),
    "n400_mpeg4_25.mp4": (400, 64, 48, 25, "mpeg4", "mp4", "yuv420p"),
    "n50_h264_25.avi": (50, 64, 48, 25, "libx264", "avi", "yuv420p"),
    "n40_vp9_24.webm": (40, 64, 48, 24, "libvpx-vp9", "webm", "yuv420p"),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    out = {}
    for i, (name, (n, w, h, fps, codec, fmt, pix)) in enumerate(VIDEOS.items()):
        out[name] = str(write_video(d / name, n, w, h, fps, codec, fmt, seed=i, pix_fmt=pix))
    return out


def _ours(size=SMALL, **kw) -> VideoProcessor:
    cfg = VideoProcessorConfig.from_dict({"size": size})
    return VideoProcessor(cfg, font_path=FONT, **kw)


def _ref(size=SMALL, **kw):
    return Ernie4_5_VLMoeVideoProcessor(size=size, font=FONT, **kw)


def _all_frames(path):
    with av.open(path) as c:
        s = c.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)]), float(s.average_rate)


def reference_from_file(ref, path, **sample_kwargs):
    """The reference pipeline with transformers' PyAV reader (its torchcodec default is not installed here)."""
    frames, md = load_video(path, backend="pyav", sample_indices_fn=partial(ref.sample_frames, **sample_kwargs))
    return ref(videos=[frames], video_metadata=[md], do_sample_frames=False, return_tensors="pt", return_metadata=True)


def reference_from_all_frames(ref, path, **sample_kwargs):
    """Reference processor on the fully decoded video (used where transformers' reader cannot read the container)."""
    frames, fps = _all_frames(path)
    md = {"total_num_frames": len(frames), "fps": fps}
    return ref(videos=[frames], video_metadata=[md], do_sample_frames=True, return_tensors="pt", return_metadata=True, **sample_kwargs)


def assert_same(a, b):
    assert a["video_grid_thw"].tolist() == b["video_grid_thw"].tolist()
    assert a["pixel_values_videos"].shape == b["pixel_values_videos"].shape
    assert a["pixel_values_videos"].dtype == b["pixel_values_videos"].dtype == torch.float32
    diff = (a["pixel_values_videos"] - b["pixel_values_videos"]).abs().max().item()
    assert diff <= 1e-4, diff
    return diff


# ------------------------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("name", [n for n in VIDEOS if not n.endswith((".mkv", ".webm"))])
def test_parity_with_reference_pyav_reader(media, name):
    ref, ours = _ref(), _ours()
    a = reference_from_file(ref, media[name])
    b = ours(media[name])
    assert_same(a, b)
    md_ref, md = a["video_metadata"][0], b["video_metadata"][0]
    assert md.total_num_frames == md_ref.total_num_frames and md.fps == md_ref.fps
    assert md.frames_indices == [int(i) for i in md_ref.frames_indices]
    assert md.timestamps == pytest.approx([float(t) for t in md_ref.timestamps])


@pytest.mark.parametrize("name", ["n16_h264_30.mkv", "n40_vp9_24.webm", "n400_h264_30.mp4"])
def test_parity_with_reference_on_all_frames(media, name):
    """Containers without a frame count (Matroska/WebM): transformers' reader divides by zero; we count packets."""
    a = reference_from_all_frames(_ref(), media[name])
    b = _ours()(media[name])
    assert_same(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_frames=20), dict(num_frames=16), dict(fps=2), dict(fps=0.5), dict(fps=7.3), dict(min_frames=4, max_frames=9),
     dict(num_frames=5, min_frames=2, max_frames=8)],
)  # fmt: skip
def test_sampling_options_parity(media, kwargs):
    path = media["n400_h264_30.mp4"]
    ref_kwargs = {k: v for k, v in kwargs.items()}
    a = reference_from_file(_ref(), path, **ref_kwargs)
    b = _ours()(path, **kwargs)
    assert_same(a, b)


def test_default_checkpoint_config_parity(media):
    """Checkpoint defaults: frames upscaled to the video min pixels (234 416), timestamps at the drawn size."""
    path = media["n7_mpeg4_25_odd.avi"]
    cfg = VideoProcessorConfig()
    ref = Ernie4_5_VLMoeVideoProcessor(font=FONT)
    a = reference_from_file(ref, path)
    b = VideoProcessor(cfg, font_path=FONT)(path)
    assert_same(a, b)
    t, gh, gw = b["video_grid_thw"][0].tolist()
    assert t == 8 and gh * gw * 14 * 14 >= 299 * 28 * 28


def test_bytes_and_file_objects(media):
    path = media["n181_mpeg4_30.avi"]
    ours = _ours()
    a = ours(path)
    raw = open(path, "rb").read()
    b = ours(raw)
    c = ours(io.BytesIO(raw))
    assert torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])
    assert torch.equal(a["pixel_values_videos"], c["pixel_values_videos"])


def test_batch_of_videos_matches_single_calls(media):
    ours = _ours()
    names = ["n7_mpeg4_25_odd.avi", "n1_h264_24.mp4", "n7_mpeg4_25_odd.avi"]
    batch = ours([media[n] for n in names])
    singles = [ours(media[n]) for n in names]
    assert torch.equal(batch["pixel_values_videos"], torch.cat([s["pixel_values_videos"] for s in singles]))
    assert batch["video_grid_thw"].tolist() == [s["video_grid_thw"][0].tolist() for s in singles]


@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_skipping_decoder_equals_sequential_decode(tmp_path, container):
    """NONREF frame dropping (h264 with B-frames) returns exactly the frames of a full sequential decode."""
    path = str(write_video(tmp_path / f"v.{container}", 400, 48, 32, 30, "libx264", container, seed=3))
    wanted = sample_frame_indices(400, 30.0, num_frames=37, min_frames=1, max_frames=400)
    fast, slow, stats = _decode_both_ways(path, wanted)
    assert [i for i, _ in fast] == [i for i, _ in slow] == wanted
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(fast, slow))
    assert stats["packets_decoded"] < 400


def _decode_both_ways(path, wanted):
    v1, v2 = OpenedVideo(path, "a"), OpenedVideo(path, "b")
    try:
        fast = list(v1.frames(wanted))  # skipping mode for mp4/mkv
        v2._reopen()
        slow = list(v2._frames_sequential(wanted))
        return fast, slow, v1.stats
    finally:
        v1.close()
        v2.close()


def _write_gop_video(path, n, options, fmt=None):
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:48, 0:64]
    base = rng.integers(0, 256, (48, 64, 3)).astype(np.int32)
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=25, options=options)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            img = ((base + ((xx + 3 * i) % 64)[..., None] + (i % 7) * 9) % 256).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


@pytest.mark.parametrize(
    "options",
    [{"g": "12", "keyint_min": "12"}, {"x264-params": "open-gop=1:keyint=20:min-keyint=20"}, {"g": "25", "bf": "0"}],
    ids=["closed_gop12", "open_gop20", "no_bframes"],
)
@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_gop_skipping_is_exact(tmp_path, options, container):
    """Seeking over GOPs without wanted frames: closed entry points only (open-GOP keyframes are never used)."""
    path = _write_gop_video(tmp_path / f"g.{container}", 300, options, container)
    for wanted in [sample_frame_indices(300, 25.0, num_frames=16), [5, 6, 150, 299], [0, 299], list(range(40, 60))]:
        fast, slow, stats = _decode_both_ways(path, wanted)
        assert [i for i, _ in fast] == [i for i, _ in slow] == wanted
        assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(fast, slow))
    if "open-gop" not in str(options):
        fast, slow, stats = _decode_both_ways(path, [5, 290])
        assert stats["jumps"] >= 1 and stats["packets_decoded"] < 100


def test_decode_thread_off_is_identical(media):
    path = media["n400_mpeg4_25.mp4"]
    a = _ours(decode_thread=True)(path)
    b = _ours(decode_thread=False)(path)
    assert torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])


# ------------------------------------------------------------------------------------------------------------ arrays
def test_arrays_and_frame_lists_parity(media):
    frames, fps = _all_frames(media["n50_h264_25.avi"])
    ours, ref = _ours(), _ref()
    md = {"total_num_frames": len(frames), "fps": fps}
    a = ref(videos=[frames.copy()], video_metadata=[md], return_tensors="pt")
    assert_same(a, ours(frames, video_metadata=[md]))
    # channels-first torch tensor
    t = torch.from_numpy(frames.copy()).permute(0, 3, 1, 2)
    assert_same(a, ours(t, video_metadata=md))
    # list of PIL frames, no metadata: fps unknown -> 24 (reference default), sampled indices
    pil = [Image.fromarray(f) for f in frames[:9]]
    a = ref(videos=[pil], return_tensors="pt")
    assert_same(a, ours([pil]))
    # without sampling the reference uses float64 timestamps of list indices
    md5 = {"total_num_frames": 5, "fps": 3.0, "frames_indices": [0, 1, 2, 3, 4]}
    a = ref(videos=[frames[:5].copy()], do_sample_frames=False, video_metadata=[md5], return_tensors="pt")
    assert_same(a, ours(frames[:5], do_sample_frames=False, video_metadata=md5))
    # (the reference refuses metadata without frames_indices here; we default them to 0..T-1)
    assert_same(a, ours(frames[:5], do_sample_frames=False, video_metadata={"total_num_frames": 5, "fps": 3.0}))
    # drawing never touches the caller's frames (the reference draws on them in place)
    before = frames.copy()
    ours(frames, video_metadata=md)
    assert np.array_equal(before, frames)


def test_no_timestamps(media):
    path = media["n7_mpeg4_25_odd.avi"]
    a = reference_from_file(_ref(draw_on_frames=False), path)
    b = _ours()(path, draw_on_frames=False)
    assert_same(a, b)


# ------------------------------------------------------------------------------------------------------------ rules
@pytest.mark.parametrize("total", [1, 2, 7, 15, 16, 17, 100, 179, 180, 181, 399, 400, 1001, 7919])
@pytest.mark.parametrize("video_fps", [23.976, 24.0, 25.0, 29.97, 30.0, 60.0])
def test_sample_frame_indices_parity(total, video_fps):
    ref = Ernie4_5_VLMoeVideoProcessor(font=FONT)
    md = HFVideoMetadata(total_num_frames=total, fps=video_fps)
    for kwargs in [{}, {"fps": 1}, {"fps": 2.5}, {"num_frames": 16}, {"num_frames": 33, "max_frames": 64}]:
        try:
            expected = [int(i) for i in ref.sample_frames(md, **kwargs)]
        except ValueError:
            with pytest.raises(VideoError):
                sample_frame_indices(total, video_fps, **kwargs)
            continue
        assert sample_frame_indices(total, video_fps, **kwargs) == expected


def test_sampling_errors():
    with pytest.raises(VideoError, match="mutually exclusive"):
        sample_frame_indices(100, 25.0, num_frames=20, fps=2)
    with pytest.raises(VideoError, match="num_frames"):
        sample_frame_indices(100, 25.0, num_frames=200)
    with pytest.raises(VideoError, match="total_num_frames=8"):
        sample_frame_indices(8, 25.0, num_frames=10, min_frames=1)
    with pytest.raises(VideoError, match="fps"):
        sample_frame_indices(100, None, fps=2)
    assert isinstance(VideoError("x"), ValueError)


@pytest.mark.parametrize("fps", [24.0, 25.0, 29.97, 30.0, 23.976, 7.0])
def test_timestamp_texts_parity(fps):
    ref = Ernie4_5_VLMoeVideoProcessor(font=FONT)
    indices = list(range(0, 5000, 7)) + [86399 * 30, 3600 * 25 + 1]
    md = HFVideoMetadata(total_num_frames=10**7, fps=fps, frames_indices=torch.tensor(indices, dtype=torch.int32))
    expected = [ref._convert_timestamp(t) for t in md.timestamps]
    assert timestamp_texts(indices, fps, float32=True) == expected
    md = HFVideoMetadata(total_num_frames=10**7, fps=fps, frames_indices=indices)
    assert timestamp_texts(indices, fps, float32=False) == [ref._convert_timestamp(t) for t in md.timestamps]


def test_metadata_record(media):
    out = _ours()(media["n400_h264_30.mp4"], num_frames=20)
    md: VideoMetadata = out["video_metadata"][0]
    rec = md.to_dict()
    assert rec["total_num_frames"] == 400 and rec["fps"] == 30.0 and rec["video_backend"] == "pyav"
    assert rec["frames_indices"] == [int(i * 20) for i in range(20)]
    assert rec["timestamps"][:3] == pytest.approx([0.0, 20 / 30, 40 / 30])
    assert md.timestamp_texts[1] == "time: 00:00:00.67"


def test_num_patches_matches_output(media):
    ours = _ours()
    out = ours(media["n7_mpeg4_25_odd.avi"])
    assert out["pixel_values_videos"].shape[0] == ours.num_patches(7, 61, 97)
    ref = _ref()
    assert ours.num_patches(7, 61, 97) == ref.get_num_of_video_patches(7, 61, 97)


# ------------------------------------------------------------------------------------------------------------ errors
def test_bad_inputs(tmp_path, media):
    ours = _ours()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        ours(str(empty))
    with pytest.raises(VideoError, match="not found"):
        ours(str(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="junk.mp4"):
        ours(str(junk))
    # an audio-only file: no video stream
    wav = tmp_path / "audio.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(VideoError, match="no video stream"):
        ours(str(wav))
    # truncated: an mp4 cut in half loses its index; an avi cut in half loses frames its header promises
    raw = open(media["n400_h264_30.mp4"], "rb").read()
    with pytest.raises(VideoError):
        ours(raw[: len(raw) // 2])
    raw = open(media["n181_mpeg4_30.avi"], "rb").read()
    with pytest.raises(VideoError, match="truncated|cannot"):
        ours(raw[: len(raw) // 2])
    with pytest.raises(VideoError, match="remote URLs"):
        ours("https://example.com/v.mp4")
    with pytest.raises(VideoError, match="channel"):
        ours(np.zeros((4, 32, 32, 4), np.uint8))
    with pytest.raises(VideoError, match="too small"):
        ours(np.zeros((2, 9, 40, 3), np.uint8))
    with pytest.raises(VideoError, match="2 videos but 1"):
        ours([np.zeros((2, 32, 32, 3), np.uint8)] * 2, video_metadata=[{"total_num_frames": 2, "fps": 1.0}])


def test_error_while_decoding_in_background(tmp_path):
    """A failure in the consumer (frames too small to draw on) stops the decode thread cleanly."""
    path = write_video(tmp_path / "tiny.mp4", 60, 64, 8, 25, "libx264", "mp4")
    for _ in range(3):
        with pytest.raises(VideoError, match="too small"):
            _ours(decode_thread=True)(str(path))
    out = _ours(decode_thread=True)(str(path), draw_on_frames=False)
    assert out["video_grid_thw"][0, 0].item() == 60


def test_font_is_required_for_drawing(tmp_path):
    with pytest.raises(OSError):
        VideoProcessor(font_path=tmp_path / "nope.ttf")
    VideoProcessor(VideoProcessorConfig(draw_on_frames=False, font=None))


@pytest.mark.parametrize("hw", [(9, 200), (10, 10), (48, 64), (61, 97), (360, 640), (480, 854), (1080, 1920), (3000, 40)])
def test_timestamp_drawing_matches_reference(hw):
    """Crop-based drawing with a cached font == the reference's whole-frame PIL round trip, for many texts."""
    from ernie_vl.video_timestamps import TimestampDrawer

    ref = Ernie4_5_VLMoeVideoProcessor(font=FONT)
    drawer = TimestampDrawer(FONT)
    h, w = hw
    rng = np.random.default_rng(h * w)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    texts = timestamp_texts([0, 1, 7, 59, 1799, 3599, 35999, 359999, 86399 * 30], 29.97) + ["time: 99:59:59.99"]
    for text in texts[:: 1 if h * w < 10**6 else 3]:
        if int(min(h, w) * 0.1) <= 0:
            with pytest.raises(VideoError, match="too small"):
                drawer.draw(frame.copy(), text)
            continue
        ours = frame.copy()
        drawer.draw(ours, text)
        expected = ref._render_image_with_timestamp(torch.from_numpy(frame).permute(2, 0, 1).contiguous(), text)
        assert np.array_equal(ours, expected.permute(1, 2, 0).numpy()), text


# ------------------------------------------------------------------------------------------------------------ short
def _harness_indices(rule, total, n, fps=25.0):
    """The harnesses' own index formulas for a video of `total` frames asked for `n`, written as they are there."""
    if rule == "every_frame":  # lmms-eval read_video: min(total_frames, num_frm) frames, np.linspace(..., dtype=int)
        return np.linspace(0, total - 1, min(total, n), dtype=int).tolist()
    if rule == "uniform_steps":  # VLMEvalKit VideoMME.save_video_frames
        step_size = total / (n + 1)
        return [int(i * step_size) for i in range(1, n + 1)]
    # MVBench get_index(bound=None, fps, max_frame=len - 1, first_idx=0)
    start, end = -100000, 100000
    start_idx, end_idx = max(0, round(start * fps)), min(round(end * fps), total - 1)
    seg_size = float(end_idx - start_idx) / n
    return np.array([int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(n)]).tolist()


@pytest.mark.parametrize("rule", ["every_frame", "uniform_steps", "segment_midpoints"])
@pytest.mark.parametrize("total, n", [(1, 16), (2, 16), (7, 16), (10, 32), (10, 16), (15, 16), (31, 32), (99, 180)])
def test_short_video_rules_follow_the_harnesses(rule, total, n):
    got = sample_frame_indices(total, 25.0, num_frames=n, min_frames=1, max_frames=max(n, 180), short_video=rule)
    assert got == _harness_indices(rule, total, n)
    assert got == sorted(got) and 0 <= got[0] and got[-1] < total
    assert len(got) == (total if rule == "every_frame" else n)
    # long enough: the reference rule whatever the short-video rule
    assert sample_frame_indices(n + 5, 25.0, num_frames=n, max_frames=max(n, 180), short_video=rule) == \
        sample_frame_indices(n + 5, 25.0, num_frames=n, max_frames=max(n, 180))


def test_short_video_without_a_rule_is_the_reference_error():
    with pytest.raises(VideoError, match="total_num_frames=10"):
        sample_frame_indices(10, 25.0, num_frames=32)
    with pytest.raises(VideoError, match="unknown short_video rule 'nearest'"):
        sample_frame_indices(10, 25.0, num_frames=32, short_video="nearest")


@pytest.mark.parametrize("rule", ["every_frame", "uniform_steps", "segment_midpoints"])
def test_short_video_pixels_equal_the_reference_on_the_sampled_frames(media, rule):
    """A 7-frame file asked for 16 frames: the frames the rule picks (repeats decoded once, written at each place, each
    with its timestamp) equal transformers' processor given exactly those frames and indices."""
    path = media["n7_mpeg4_25_odd.avi"]
    b = _ours()(path, num_frames=16, short_video=rule)
    idx = b["video_metadata"][0].frames_indices
    assert idx == _harness_indices(rule, 7, 16)
    frames, fps = _all_frames(path)
    md = {"total_num_frames": 7, "fps": fps, "frames_indices": torch.tensor(idx, dtype=torch.int32)}
    a = _ref()(videos=[frames[idx]], video_metadata=[md], do_sample_frames=False, return_tensors="pt")
    assert_same(a, b)
    c = _ours()(frames, video_metadata=[{"total_num_frames": 7, "fps": fps}], num_frames=16, short_video=rule)
    assert_same(a, c)  # frames given as an array take the same indices
