"""Generate the synthetic ``demo`` benchmark shipped in ``evals/data/demo/``.

Run once and commit the outputs (``python -m evals.data.make_demo``); the outputs are deterministic. The questions
come from :mod:`evals.data.demo_task` (200 questions over fresh scenes: colours, shapes, counts, positions, presence,
two-image and video questions); every answer is fixed by the drawn content, so a model that sees the pictures scores
near 100 % and a broken processor (wrong colour order, dropped frames, shuffled images) visibly does not.
Needs Pillow and PyAV, which ``evals`` itself never imports.

Files: ``images/*.png`` (112×112), ``videos/*.mp4`` (112×112, 8 frames at 4 fps, H.264), ``samples.jsonl``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np

from evals.data.demo_task import FPS, SIZE, Example, benchmark_set, chance

OUT = Path(__file__).resolve().parent / "demo"


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.options = {"crf": "28", "preset": "veryslow"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_set(out: Path, examples: list[Example]) -> Path:
    """A demo folder (``samples.jsonl`` + the media it names) holding `examples`; replaces `out`'s media folders."""
    for sub in ("images", "videos"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    for ex in examples:
        for name, image in ex.images.items():
            image.save(out / name, optimize=True)
        for name, frames in ex.videos.items():
            write_video(out / name, frames)
    with open(out / "samples.jsonl", "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.record, sort_keys=True) + "\n")
    return out


def main() -> None:
    examples = benchmark_set()
    write_set(OUT, examples)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    mean_chance = sum(chance(ex.record) for ex in examples) / len(examples)
    print(f"wrote {OUT}: {len(examples)} questions, {total} bytes; chance accuracy {mean_chance:.3f}")


if __name__ == "__main__":
    main()
