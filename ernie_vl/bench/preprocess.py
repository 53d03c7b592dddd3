"""Preprocessing benchmark: ernie_vl image/video processors vs the transformers 5.23.0 reference, same inputs, one run.

``python -m ernie_vl.bench preprocess [--rounds 3] [--images 24] [--videos 6] [--threads N] [--json out.json]``

* Inputs are generated deterministically into a temporary folder: JPEG/PNG photos-like images of typical
  benchmark sizes (224² … 4000×3000) and H.264/MPEG-4 videos (mp4/avi, 24/25/30 fps, 120–1800 frames).
* Images, reference: ``Ernie4_5_VLMoeImageProcessor`` (torchvision backend, what ``AutoProcessor`` returns) and
  ``Ernie4_5_VLMoeImageProcessorPil``, each called per image with the file path (as the chat-template path does).
* Videos, reference: transformers' PyAV reader (``video_utils.load_video(backend="pyav")`` with the processor's
  ``sample_frames``) feeding ``Ernie4_5_VLMoeVideoProcessor`` (timestamps drawn with the same font). The reference's
  default decoder is torchcodec, which is not installed here; torchvision's decoder is gone in torchvision 0.29.
* Ours: ``ernie_vl.image.ImageProcessor`` / ``ernie_vl.video.VideoProcessor`` with the same configuration.
* Rounds alternate reference and ours; the best round of each is reported (the machine is shared, so the minimum is
  the least disturbed measurement). Outputs are compared in the first round (max |Δ| of pixel values, grids equal).

transformers is imported only here, when the benchmark runs; the rest of ``ernie_vl`` never imports it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

IMAGE_SIZES = [  # (height, width): typical VQA / document / photo sizes
    (224, 224), (375, 500), (480, 640), (600, 800), (640, 480), (768, 1024), (720, 1280), (1080, 1920),
    (1200, 1600), (900, 1600), (1024, 1024), (2000, 1500), (500, 375), (332, 500), (1080, 1080), (3000, 4000),
]  # fmt: skip
VIDEO_SPECS = [  # (name, frames, width, height, fps, codec, container)
    ("v0_h264_24fps.mp4", 400, 640, 360, 24, "libx264", "mp4"),
    ("v1_h264_30fps.mp4", 300, 480, 270, 30, "libx264", "mp4"),
    ("v2_mpeg4_25fps.avi", 250, 640, 360, 25, "mpeg4", "avi"),
    ("v3_h264_30fps.mp4", 120, 640, 360, 30, "libx264", "mp4"),  # (Matroska: the reference reader fails, no frame count)
    ("v4_h264_25fps.mp4", 181, 320, 240, 25, "libx264", "mp4"),
    ("v5_h264_24fps.mp4", 240, 854, 480, 24, "libx264", "mp4"),
    ("v6_h264_30fps_60s.mp4", 1800, 480, 270, 30, "libx264", "mp4"),  # a one-minute clip: 180 of 1800 frames kept
]


# --------------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------------
def _photo(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A photo-like RGB image: smooth random field + edges + mild noise (compresses like real photos)."""
    small = rng.integers(0, 256, (max(2, h // 64), max(2, w // 64), 3)).astype(np.float32)
    t = torch.from_numpy(small).permute(2, 0, 1)[None]
    big = torch.nn.functional.interpolate(t, size=(h, w), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = ((xx // max(1, w // 12) + yy // max(1, h // 9)) % 2) * 40.0
    img = big + stripes[..., None] + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        arr = _photo(h, w, rng)
        ext = "png" if i % 6 == 5 else "jpg"
        p = folder / f"img_{i:02d}_{h}x{w}.{ext}"
        Image.fromarray(arr).save(p, quality=90) if ext == "jpg" else Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def write_video(
    path: Path,
    frames: int,
    width: int,
    height: int,
    fps: int,
    codec: str = "libx264",
    fmt: str | None = None,
    seed: int = 0,
    pix_fmt: str = "yuv420p",
) -> Path:
    """A synthetic camera pan over a photo-like scene with a moving block, written with PyAV.

    Motion is mostly translation, so the encoder predicts it well and the bitrate is in the range of real footage
    (about 1 Mbit/s at 640×360 with libx264's defaults, with a little per-frame noise); decoding cost, which both sides pay, stays realistic.
    ``fmt`` is the container (``None``: from the file name); odd sizes need e.g. ``pix_fmt="yuv444p"`` with libx264.
    """
    import av

    rng = np.random.default_rng(seed)
    pan_x, pan_y = max(8, width // 2), max(8, height // 2)
    scene = _photo(height + pan_y, width + pan_x, rng)
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        for i in range(frames):
            x0 = _bounce(2 * i, pan_x)
            y0 = _bounce(i, pan_y)
            img = scene[y0 : y0 + height, x0 : x0 + width].astype(np.int16)
            img += rng.integers(-12, 13, img.shape, dtype=np.int16)  # a little sensor noise, new in every frame
            img = np.clip(img, 0, 255).astype(np.uint8)
            bx = _bounce(5 * i, max(1, width - 40))
            img[height // 3 : height // 3 + 30, bx : bx + 40] = (255, 200, 40)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def _bounce(t: int, span: int) -> int:
    """0, 1, ..., span, span-1, ..., 0, 1, ... (a triangle wave)."""
    if span <= 0:
        return 0
    t %= 2 * span
    return t if t <= span else 2 * span - t


def make_videos(folder: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        name, frames, w, h, fps, codec, fmt = VIDEO_SPECS[i % len(VIDEO_SPECS)]
        out.append(write_video(folder / f"{i:02d}_{name}", frames, w, h, fps, codec, fmt, seed=i))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------------------------------
def _time(fn: Callable[[Any], Any], inputs: list) -> tuple[float, float, list]:
    """Wall seconds, process CPU seconds (all threads) and outputs of ``fn`` over ``inputs``."""
    c, t = time.process_time(), time.perf_counter()
    outs = [fn(x) for x in inputs]
    return time.perf_counter() - t, time.process_time() - c, outs


def _max_diff(a: dict, b: dict, pix: str, grid: str) -> float:
    if not torch.equal(torch.as_tensor(a[grid]), torch.as_tensor(b[grid])):
        return float("inf")
    return float((torch.as_tensor(a[pix]) - torch.as_tensor(b[pix])).abs().max())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each side is reported")
    p.add_argument("--images", type=int, default=24, help="number of images (cycled over %d sizes)" % len(IMAGE_SIZES))
    p.add_argument("--videos", type=int, default=len(VIDEO_SPECS), help="number of videos (cycled over %d specs)" % len(VIDEO_SPECS))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--no-decode-thread", action="store_true", help="ours: decode videos in the calling thread")
    p.add_argument("--workdir", type=Path, default=None, help="keep generated inputs here (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        import transformers  # noqa: F401
        from transformers import Ernie4_5_VLMoeImageProcessor, Ernie4_5_VLMoeImageProcessorPil
        from transformers import Ernie4_5_VLMoeVideoProcessor
        from transformers.video_utils import load_video
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit(f"the preprocess benchmark needs transformers==5.23.0 for the reference side: {e}")

    from ..image import ImageProcessor
    from ..processor import PACKAGED_FONT
    from ..video import VideoProcessor

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    print(f"generating inputs in {work} ...", flush=True)
    images = [str(p) for p in make_images(work, args.images)]
    videos = [str(p) for p in make_videos(work, args.videos)] if args.videos else []

    ref_tv = Ernie4_5_VLMoeImageProcessor()
    ref_pil = Ernie4_5_VLMoeImageProcessorPil()
    ref_vp = Ernie4_5_VLMoeVideoProcessor(font=str(PACKAGED_FONT))
    ours_img = ImageProcessor()
    ours_vid = VideoProcessor(font_path=PACKAGED_FONT, decode_thread=not args.no_decode_thread)

    def ref_video(path):
        frames, md = load_video(path, backend="pyav", sample_indices_fn=partial(ref_vp.sample_frames))
        return ref_vp(videos=[frames], video_metadata=[md], do_sample_frames=False, return_tensors="pt")

    runners = {
        "images/reference-torchvision": (lambda p: ref_tv(p, return_tensors="pt"), images),
        "images/reference-pil": (lambda p: ref_pil(p, return_tensors="pt"), images),
        "images/ours": (ours_img, images),
    }
    if videos:
        runners["videos/reference-pyav"] = (ref_video, videos)
        runners["videos/ours"] = (ours_vid, videos)

    # warm-up (first calls pay lazy initialisation on both sides)
    for fn, inputs in runners.values():
        fn(inputs[0])

    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    diffs: dict[str, float] = {}
    for r in range(args.rounds):
        outs = {}
        for name, (fn, inputs) in runners.items():
            dt, cpu, o = _time(fn, inputs)
            best[name] = min(best.get(name, float("inf")), dt)
            best_cpu[name] = min(best_cpu.get(name, float("inf")), cpu)
            if r == 0:
                outs[name] = o
            del o
            print(f"round {r + 1}/{args.rounds} {name:32s} wall {dt:8.3f}s  cpu {cpu:8.3f}s", flush=True)
        if r == 0:
            diffs["images vs torchvision"] = max(
                _max_diff(a, b, "pixel_values", "image_grid_thw")
                for a, b in zip(outs["images/reference-torchvision"], outs["images/ours"])
            )
            if videos:
                diffs["videos vs reference"] = max(
                    _max_diff(a, b, "pixel_values_videos", "video_grid_thw")
                    for a, b in zip(outs["videos/reference-pyav"], outs["videos/ours"])
                )
            del outs

    n_img, n_vid = len(images), len(videos)
    rates = {k: (n_img if k.startswith("images") else n_vid) / v for k, v in best.items()}
    cpu_per_item = {k: v / (n_img if k.startswith("images") else n_vid) for k, v in best_cpu.items()}
    fastest_ref_img = max(("images/reference-torchvision", "images/reference-pil"), key=lambda k: rates[k])
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "n_images": n_img,
        "n_videos": n_vid,
        "rates_per_s": rates,
        "cpu_seconds_per_item": cpu_per_item,
        "load_average_after": list(__import__("os").getloadavg()),
        "image_ratio_vs_fastest_reference": rates["images/ours"] / rates[fastest_ref_img],
        "fastest_image_reference": fastest_ref_img,
        "max_abs_diff": diffs,
    }
    if videos:
        result["video_ratio"] = rates["videos/ours"] / rates["videos/reference-pyav"]
        result["video_cpu_ratio"] = cpu_per_item["videos/reference-pyav"] / cpu_per_item["videos/ours"]
    result["image_cpu_ratio_vs_torchvision"] = (
        cpu_per_item["images/reference-torchvision"] / cpu_per_item["images/ours"]
    )

    print()
    print(f"torch threads: {result['threads']}; {n_img} images, {n_vid} videos; best of {args.rounds} rounds")
    for k, v in rates.items():
        unit = "images/s" if k.startswith("images") else "videos/s"
        print(f"  {k:32s} {v:8.2f} {unit}   ({cpu_per_item[k] * 1000:8.1f} CPU-ms per item)")
    print(f"  images: ours / {fastest_ref_img.split('/')[1]} = {result['image_ratio_vs_fastest_reference']:.2f}x")
    if videos:
        print(f"  videos: ours / reference-pyav = {result['video_ratio']:.2f}x")
    print(
        f"  CPU time per item, reference / ours: images (torchvision) {result['image_cpu_ratio_vs_torchvision']:.2f}x"
        + (f", videos {result['video_cpu_ratio']:.2f}x" if videos else "")
    )
    print(f"  load average after the run: {result['load_average_after']} (the machine may be shared)")
    for k, v in diffs.items():
        print(f"  max |pixel diff| {k}: {v:.3g}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if tmp:
        tmp.cleanup()
    return 0
