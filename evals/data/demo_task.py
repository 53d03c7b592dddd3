"""The synthetic ``demo`` task: pictures and short videos of coloured shapes, and questions their content answers.

One generator serves two users, so that what the demo model learns is exactly what the ``demo`` benchmark asks:
``python -m evals.data.make_demo`` writes the benchmark (seed :data:`BENCHMARK_SEED`, :data:`BENCHMARK_COUNTS`
questions per kind) and ``python -m ernie_vl_cli.train_demo`` draws its training questions here with other seeds,
leaving out every scene the benchmark holds (:attr:`Example.scene`).

Kinds of question (``category`` of the sample in brackets):

* ``colour`` / ``colour_short`` [colour]: "What colour is the circle?" — four options, or a word;
* ``shape`` [shape]: "What shape is shown in the image?" — square, circle or triangle;
* ``count`` [count]: "How many triangles are in the image?" — 1 to 4 shapes of one kind and colour;
* ``position`` [position]: "Where is the square?" — the quadrant it lies in, four options;
* ``presence`` [presence]: "Is there a circle in the image?" — yes or no;
* ``which`` [multi-image]: "Which of the two images shows a circle?" — the first or the second;
* ``direction`` [video]: "In which direction does the dot move?" — four options (a short H.264 clip);
* ``final_colour`` / ``change`` [video]: "What colour is the square at the end of the video?" (a word) /
  "Does the square change colour during the video?" (yes or no) — the colour may change half-way.

Scenes are drawn from numpy's PCG64 with fixed seeds: the same seed gives the same scenes on every machine.
:func:`chance` is the score of guessing uniformly among a question's possible answers (options, yes/no, or its
``answer_space``); the benchmark's mean chance is printed by ``make_demo`` and stated in the README.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SIZE = 112  # image side: a multiple of 28, so the processor keeps it (8 x 8 patches -> 16 image tokens)
FRAMES, FPS = 8, 4  # a 2-second clip; the benchmark samples 4 frames (0, 2, 4, 6): two frame pairs
WHITE = (255, 255, 255)
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 220), "yellow": (240, 210, 20)}
SHAPES = ("square", "circle", "triangle")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
DIRECTIONS = ("left to right", "right to left", "top to bottom", "bottom to top")
COUNT_WORDS = ("one", "two", "three", "four")
LETTERS = "ABCD"

BENCHMARK_SEED = 2024
#: questions per kind in the packaged benchmark (200 in all; mean chance 0.29)
BENCHMARK_COUNTS = {"colour": 32, "colour_short": 32, "shape": 24, "count": 32, "position": 32, "presence": 12,
                    "which": 8, "direction": 12, "final_colour": 10, "change": 6}
KINDS = tuple(BENCHMARK_COUNTS)


@dataclass
class Example:
    """One question: its ``samples.jsonl`` row (``record``, media named by file), the pictures and clips it names
    (``images``: file -> PIL image, ``videos``: file -> RGB frames [H, W, 3] uint8), the ``scene`` key (kind and
    drawn parameters: equal keys mean equal pixels) and ``sentence``, the answer as a sentence (what the demo model
    says to the question asked without the benchmark's answer format)."""

    record: dict
    images: dict[str, Image.Image] = field(default_factory=dict)
    videos: dict[str, list[np.ndarray]] = field(default_factory=dict)
    scene: str = ""
    sentence: str = ""


def chance(record: dict) -> float:
    """The expected score of a uniform guess among the question's possible answers."""
    kind = record["type"]
    if kind == "mcq":
        return 1.0 / len(record["options"])
    if kind == "yesno":
        return 0.5
    return 1.0 / len(record["answer_space"])


def reply(record: dict) -> str:
    """The answer as the benchmark's prompt asks for it: the option letter, yes/no, or the word."""
    return record["answers"][0]


# ------------------------------------------------------------------------------------------------ drawing
def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (SIZE, SIZE), WHITE)
    return image, ImageDraw.Draw(image)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: int, y: int, side: int, colour: str) -> None:
    box = [x, y, x + side - 1, y + side - 1]
    fill = COLOURS[colour]
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon([(x + side // 2, y), (x + side - 1, y + side - 1), (x, y + side - 1)], fill=fill)


def _one_shape(rng: np.random.Generator, shape: str | None = None, colour: str | None = None):
    """One shape inside one quadrant: (image, params)."""
    shape = shape or SHAPES[rng.integers(3)]
    colour = colour or list(COLOURS)[rng.integers(4)]
    quadrant = int(rng.integers(4))
    side = int(rng.integers(28, 45))
    half = SIZE // 2
    x = (quadrant % 2) * half + int(rng.integers(3, half - side - 2))
    y = (quadrant // 2) * half + int(rng.integers(3, half - side - 2))
    image, draw = _canvas()
    _draw_shape(draw, shape, x, y, side, colour)
    return image, (shape, colour, QUADRANTS[quadrant], x, y, side)


def _several(rng: np.random.Generator, n: int, shape: str, colour: str):
    """n shapes of one kind and colour in distinct cells of a 4 x 4 grid."""
    cell = SIZE // 4
    cells = sorted(int(c) for c in rng.choice(16, size=n, replace=False))
    image, draw = _canvas()
    params = []
    for c in cells:
        side = int(rng.integers(16, 23))
        x = (c % 4) * cell + int(rng.integers(1, cell - side))
        y = (c // 4) * cell + int(rng.integers(1, cell - side))
        _draw_shape(draw, shape, x, y, side, colour)
        params.append((x, y, side))
    return image, tuple(params)


def _moving_dot(rng: np.random.Generator, direction: str, colour: str):
    side = 22
    lane = int(rng.integers(8, SIZE - side - 8))
    start, end = 4, SIZE - side - 4
    frames = []
    for i in range(FRAMES):
        along = start + (end - start) * i // (FRAMES - 1)
        if direction in ("right to left", "bottom to top"):
            along = start + end - along
        x, y = (along, lane) if direction in ("left to right", "right to left") else (lane, along)
        image, draw = _canvas()
        _draw_shape(draw, "circle", x, y, side, colour)
        frames.append(np.asarray(image))
    return frames, lane


def _colour_clip(rng: np.random.Generator, shape: str, first: str, last: str):
    """One shape, colour `first` for the first half of the clip and `last` for the second."""
    side = int(rng.integers(36, 61))
    x, y = (int(v) for v in rng.integers(6, SIZE - side - 6, size=2))
    frames = []
    for i in range(FRAMES):
        image, draw = _canvas()
        _draw_shape(draw, shape, x, y, side, first if i < FRAMES // 2 else last)
        frames.append(np.asarray(image))
    return frames, (x, y, side)


# ------------------------------------------------------------------------------------------------ questions
def _options(values, answer: str) -> tuple[dict[str, str], str]:
    options = {LETTERS[i]: v for i, v in enumerate(values)}
    return options, LETTERS[list(values).index(answer)]


def draw_example(kind: str, rng: np.random.Generator, name: str) -> Example:
    """One question of `kind` (see the module docstring); media files are named after `name`."""
    img = f"images/{name}.png"
    colours = list(COLOURS)
    rec = {"id": name, "media": [{"kind": "image", "file": img}]}
    if kind in ("colour", "colour_short", "shape", "position", "presence"):
        image, params = _one_shape(rng)
        shape, colour, quadrant = params[:3]
        ex = Example(rec, images={img: image}, scene=f"one{params}")
        if kind == "colour":
            options, letter = _options(colours, colour)
            rec.update(type="mcq", category="colour", question=f"What colour is the {shape}?", options=options,
                       answers=[letter])
            ex.sentence = f"The {shape} is {colour}."
        elif kind == "colour_short":
            rec.update(type="short", category="colour", question=f"What colour is the {shape}?", answers=[colour],
                       answer_space=colours)
            ex.sentence = f"The {shape} is {colour}."
        elif kind == "shape":
            rec.update(type="short", category="shape", question="What shape is shown in the image?", answers=[shape],
                       answer_space=list(SHAPES))
            ex.sentence = f"It is a {colour} {shape}."
        elif kind == "position":
            options, letter = _options(QUADRANTS, quadrant)
            rec.update(type="mcq", category="position", question=f"Where is the {shape}?", options=options,
                       answers=[letter])
            ex.sentence = f"The {shape} is in the {quadrant}."
        else:
            asked = shape if rng.integers(2) else SHAPES[(SHAPES.index(shape) + 1 + rng.integers(2)) % 3]
            yes = asked == shape
            rec.update(type="yesno", category="presence", question=f"Is there a {asked} in the image?",
                       answers=["yes" if yes else "no"])
            ex.sentence = f"Yes, there is a {colour} {shape}." if yes else f"No, there is a {colour} {shape}."
        return ex
    if kind == "count":
        n = int(rng.integers(1, 5))
        shape, colour = SHAPES[rng.integers(3)], colours[rng.integers(4)]
        image, params = _several(rng, n, shape, colour)
        rec.update(type="short", category="count", question=f"How many {shape}s are in the image?",
                   answers=[str(n), COUNT_WORDS[n - 1]], answer_space=[str(k) for k in range(1, 5)])
        sentence = f"There is one {shape}." if n == 1 else f"There are {n} {shape}s."
        return Example(rec, images={img: image}, scene=f"count{(shape, colour, params)}", sentence=sentence)
    if kind == "which":
        asked = SHAPES[rng.integers(3)]
        other = SHAPES[(SHAPES.index(asked) + 1 + rng.integers(2)) % 3]
        second = bool(rng.integers(2))
        a, pa = _one_shape(rng, shape=other if second else asked)
        b, pb = _one_shape(rng, shape=asked if second else other)
        files = [f"images/{name}-1.png", f"images/{name}-2.png"]
        options, letter = _options(["the first", "the second"], "the second" if second else "the first")
        rec.update(type="mcq", category="multi-image", question=f"Which of the two images shows a {asked}?",
                   options=options, answers=[letter], media=[{"kind": "image", "file": f} for f in files])
        return Example(rec, images=dict(zip(files, (a, b))), scene=f"which{(asked, pa, pb)}",
                       sentence=f"The {'second' if second else 'first'} image shows a {asked}.")
    vid = f"videos/{name}.mp4"
    rec["media"] = [{"kind": "video", "file": vid}]
    if kind == "direction":
        direction, colour = DIRECTIONS[rng.integers(4)], colours[rng.integers(4)]
        frames, lane = _moving_dot(rng, direction, colour)
        options, letter = _options(DIRECTIONS, direction)
        rec.update(type="mcq", category="video", question="In which direction does the dot move?", options=options,
                   answers=[letter])
        return Example(rec, videos={vid: frames}, scene=f"dot{(direction, colour, lane)}",
                       sentence=f"The dot moves from {direction}.")
    if kind in ("final_colour", "change"):
        shape, first = SHAPES[rng.integers(3)], colours[rng.integers(4)]
        changes = kind == "final_colour" or bool(rng.integers(2))
        last = colours[(colours.index(first) + 1 + rng.integers(3)) % 4] if changes else first
        frames, params = _colour_clip(rng, shape, first, last)
        ex = Example(rec, videos={vid: frames}, scene=f"clip{(shape, first, last, params)}")
        if kind == "final_colour":
            rec.update(type="short", category="video",
                       question=f"What colour is the {shape} at the end of the video?", answers=[last],
                       answer_space=colours)
            ex.sentence = f"At the end the {shape} is {last}."
        else:
            rec.update(type="yesno", category="video", question=f"Does the {shape} change colour during the video?",
                       answers=["yes" if changes else "no"])
            ex.sentence = f"Yes, it turns from {first} to {last}." if changes else f"No, it stays {first}."
        return ex
    raise ValueError(f"unknown demo question kind {kind!r}; known: {', '.join(KINDS)}")


def draw_set(seed: int, counts: dict[str, int], prefix: str = "", exclude: frozenset[str] = frozenset(),
             shuffle: bool = False) -> list[Example]:
    """`counts[kind]` questions of each kind from `seed`, named ``<prefix><kind>-<i>``; a scene in `exclude` is drawn
    again. Kinds are interleaved (each kind's questions spread evenly over the list, so the first questions cover
    most kinds), or in a seeded random order with `shuffle`."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, n in counts.items():
        for i in range(n):
            for _ in range(100):
                ex = draw_example(kind, rng, f"{prefix}{kind}-{i:03d}")
                if ex.scene not in exclude:
                    break
            else:
                raise RuntimeError(f"could not draw a {kind} scene outside the {len(exclude)} excluded ones")
            out.append((ex, (i + 0.5) / n))
    out = [ex for ex, _ in sorted(out, key=lambda pair: pair[1])]  # stable: kind order breaks ties
    if shuffle:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def benchmark_set() -> list[Example]:
    """The packaged ``demo`` benchmark's questions."""
    return draw_set(BENCHMARK_SEED, BENCHMARK_COUNTS)
