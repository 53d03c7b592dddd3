"""Generate the tiny synthetic ``demo`` benchmark shipped in ``evals/data/demo/``.

Run once and commit the outputs (``python -m evals.data.make_demo``); the outputs are deterministic.
Needs Pillow and PyAV, which ``evals`` itself never imports. Every answer is determined by the drawn
content ("what colour is the square" → red), so a working model scores near 100 % and a broken
processor (wrong colour order, dropped frames, shuffled images) visibly does not.

Files: ``images/*.png`` (64×64), ``videos/*.mp4`` (64×64, 8 frames at 4 fps, H.264), ``samples.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "demo"
SIZE = 64
WHITE = (255, 255, 255)
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 220), "yellow": (240, 210, 20)}


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (SIZE, SIZE), WHITE)
    return image, ImageDraw.Draw(image)


def make_images() -> dict[str, Image.Image]:
    images = {}
    img, draw = _canvas()
    draw.rectangle([16, 16, 47, 47], fill=COLOURS["red"])
    images["red_square"] = img
    img, draw = _canvas()
    draw.ellipse([14, 14, 49, 49], fill=COLOURS["blue"])
    images["blue_circle"] = img
    img, draw = _canvas()
    for x in (4, 24, 44):
        draw.rectangle([x, 24, x + 15, 39], fill=COLOURS["green"])
    images["three_squares"] = img
    img, draw = _canvas()
    draw.polygon([(32, 10), (54, 52), (10, 52)], fill=COLOURS["green"])
    images["green_triangle"] = img
    return images


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 4) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.options = {"crf": "28", "preset": "veryslow"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_videos() -> dict[str, list[np.ndarray]]:
    videos = {}
    frames = []
    for i in range(8):  # a red dot moving from left to right
        img, draw = _canvas()
        x = 4 + i * 6
        draw.ellipse([x, 24, x + 14, 38], fill=COLOURS["red"])
        frames.append(np.asarray(img))
    videos["dot_left_to_right"] = frames
    frames = []
    for i in range(8):  # a square that is blue, then turns yellow half-way
        img, draw = _canvas()
        draw.rectangle([16, 16, 47, 47], fill=COLOURS["blue" if i < 4 else "yellow"])
        frames.append(np.asarray(img))
    videos["square_blue_to_yellow"] = frames
    return videos


def samples() -> list[dict]:
    img = lambda name: {"kind": "image", "file": f"images/{name}.png"}  # noqa: E731
    vid = lambda name: {"kind": "video", "file": f"videos/{name}.mp4"}  # noqa: E731
    colours = {"A": "red", "B": "green", "C": "blue", "D": "yellow"}
    return [
        {"id": "img-colour-square", "type": "mcq", "category": "image", "question": "What colour is the square?",
         "options": colours, "answers": ["A"], "media": [img("red_square")]},
        {"id": "img-colour-circle", "type": "mcq", "category": "image", "question": "What colour is the circle?",
         "options": colours, "answers": ["C"], "media": [img("blue_circle")]},
        {"id": "img-circle-yes", "type": "yesno", "category": "image", "question": "Is there a circle in the image?",
         "answers": ["yes"], "media": [img("blue_circle")]},
        {"id": "img-circle-no", "type": "yesno", "category": "image", "question": "Is there a circle in the image?",
         "answers": ["no"], "media": [img("red_square")]},
        {"id": "img-count-squares", "type": "short", "category": "image",
         "question": "How many squares are in the image?", "answers": ["3", "three"], "media": [img("three_squares")]},
        {"id": "img-shape", "type": "short", "category": "image", "question": "What shape is shown in the image?",
         "answers": ["triangle"], "media": [img("green_triangle")]},
        {"id": "multi-which-circle", "type": "mcq", "category": "multi-image",
         "question": "Which of the two images shows a circle?", "options": {"A": "the first", "B": "the second"},
         "answers": ["B"], "media": [img("red_square"), img("blue_circle")]},
        {"id": "vid-direction", "type": "mcq", "category": "video", "question": "In which direction does the dot move?",
         "options": {"A": "left to right", "B": "right to left", "C": "top to bottom", "D": "bottom to top"},
         "answers": ["A"], "media": [vid("dot_left_to_right")]},
        {"id": "vid-final-colour", "type": "short", "category": "video",
         "question": "What colour is the square at the end of the video?", "answers": ["yellow"],
         "media": [vid("square_blue_to_yellow")]},
        {"id": "vid-colour-change", "type": "yesno", "category": "video",
         "question": "Does the square change colour during the video?", "answers": ["yes"],
         "media": [vid("square_blue_to_yellow")]},
    ]


def main() -> None:
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    (OUT / "videos").mkdir(parents=True, exist_ok=True)
    for name, image in make_images().items():
        image.save(OUT / "images" / f"{name}.png", optimize=True)
    for name, frames in make_videos().items():
        _write_video(OUT / "videos" / f"{name}.mp4", frames)
    with open(OUT / "samples.jsonl", "w", encoding="utf-8") as fh:
        for sample in samples():
            fh.write(json.dumps(sample, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
