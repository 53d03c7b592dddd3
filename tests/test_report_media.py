"""pipelines.report_media: the report's thumbnails are the run's media — each image, and of each video exactly the
frames at the row's recorded indices — matched to the rows through the run's manifest; what cannot be shown says so."""

from __future__ import annotations

import json

import av
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from evals.registry import get_benchmark
from pipelines.report_media import FRAME_SIDE, IMAGE_SIDE, media_hook
from pipelines.schema import predictions_table


def run_dir(tmp_path, data=None):
    (tmp_path / "manifest.json").write_text(json.dumps({"benchmarks": {"demo": {"data": data}}}))
    return tmp_path


def thumb(array: np.ndarray, side: int) -> np.ndarray:
    image = Image.fromarray(array)
    image.thumbnail((side, side))
    return np.asarray(image, dtype=np.float32)


def decoded(path) -> list[np.ndarray]:
    """Every frame, decoded in order (the reference)."""
    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_video_strip_shows_the_recorded_frames(tmp_path):
    def distinct(frames):  # a video whose frames all differ, so that a wrong frame cannot pass for the right one
        return all(np.abs(a.astype(int) - b).mean() > 1 for i, a in enumerate(frames) for b in frames[i + 1:])

    sample, frames = next((s, f) for s in get_benchmark("demo").load() if s.media and s.media[0].kind == "video"
                          and distinct(f := decoded(s.media[0].path)))
    wanted = [1, 4, 6]
    row = dict(sample.to_record(), media_items=1, frame_indices=wanted, frame_timestamps=[0.25, 1.0, 1.5])
    dest = tmp_path / "media"
    entries = media_hook(run_dir(tmp_path))([row], dest)
    (entry,) = entries[("demo", sample.split, sample.sample_id)]
    assert [(f["i"], f["t"]) for f in entry["frames"]] == [(1, 0.25), (4, 1.0), (6, 1.5)]
    for f in entry["frames"]:
        got = np.asarray(Image.open(dest / f["src"]).convert("RGB"), dtype=np.float32)
        assert max(got.shape[:2]) <= FRAME_SIDE
        errors = [np.abs(got - thumb(frame, FRAME_SIDE)).mean() for frame in frames]
        assert int(np.argmin(errors)) == f["i"] and errors[f["i"]] < 4.0, errors  # JPEG: close, and that frame


def test_images_are_thumbnailed_once_and_shared(tmp_path):
    samples = [s for s in get_benchmark("demo").load() if s.media and s.media[0].kind == "image"][:6]
    rows = [dict(s.to_record(), media_items=len(s.media)) for s in samples]
    rows.append(dict(rows[0], sample_id="copy"))  # a second row on the same image (but unknown to the reader)
    dest = tmp_path / "media"
    entries = media_hook(run_dir(tmp_path))(rows, dest)
    for s in samples:
        (entry,) = entries[("demo", s.split, s.sample_id)][:1]
        got = np.asarray(Image.open(dest / entry["src"]).convert("RGB"), dtype=np.float32)
        want = thumb(np.asarray(Image.open(s.media[0].path).convert("RGB")), IMAGE_SIDE)
        assert got.shape == want.shape and np.abs(got - want).mean() < 4.0
    assert ("demo", samples[0].split, "copy") not in entries  # no such sample in the benchmark's data
    assert len(list(dest.iterdir())) == len({s.media[0].path for s in samples})


def test_what_cannot_be_shown_says_why(tmp_path):
    sample = next(s for s in get_benchmark("demo").load() if s.media and s.media[0].kind == "video")
    rows = [dict(sample.to_record(), media_items=1, frame_indices=None),  # the row failed before sampling
            {"benchmark": "mmbench", "split": "dev", "sample_id": "1", "media_items": 1}]
    entries = media_hook(run_dir(tmp_path))(rows, tmp_path / "media")
    assert entries[("demo", sample.split, sample.sample_id)][0]["missing"] == "no sampled frames recorded for this row"
    assert "names no data folder" in entries[("mmbench", "dev", "1")][0]["missing"]
    rows = [dict(sample.to_record(), media_items=1, frame_indices=[0, 10_000])]
    (entry,) = media_hook(run_dir(tmp_path))(rows, tmp_path / "media")[("demo", sample.split, sample.sample_id)]
    assert entry["missing"].startswith("cannot decode") and "frames" not in entry


def test_report_command_makes_thumbnails_unless_told_not_to(tmp_path, capsys):
    from pipelines.cli import main

    samples = [s for s in get_benchmark("demo").load() if s.media and s.media[0].kind == "image"][:3]
    rows = [dict(s.to_record(), prediction=s.targets[0], error=None, media_items=1) for s in samples]
    (tmp_path / "predictions").mkdir()
    pq.write_table(predictions_table(rows), tmp_path / "predictions" / "part-0.parquet")
    run_dir(tmp_path)
    assert main(["report", str(tmp_path), "--no-media"]) == 0
    assert (tmp_path / "report.html").is_file() and not (tmp_path / "report_files" / "media").exists()
    assert main(["report", str(tmp_path)]) == 0
    assert len(list((tmp_path / "report_files" / "media").glob("*.jpg"))) == len({s.media[0].path for s in samples})
    assert "wrote" in capsys.readouterr().out
