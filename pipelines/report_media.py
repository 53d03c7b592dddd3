"""Thumbnails of the samples' images and videos for the HTML pages (the media hook of `evals.sample_browser`).

The prediction rows keep no media (`evals.sample.Sample.to_record`), so the hook reads them again the way the run
did: each benchmark's reader over the data folder the run's `manifest.json` names (`benchmarks.<name>.data`; the
packaged data for `demo`), matched to the rows by (benchmark, split, sample_id). It writes small JPEG files into
the page's `<page>_files/media/` and returns, per row, what the sample browser shows:

* an image: one thumbnail (longest side `IMAGE_SIDE` px), decoded with Pillow, EXIF orientation applied;
* a video: a strip of the frames the model was given, at the indices the row's `frame_indices` records (decoded
  with `ernie_vl.video_decode`, the pipeline's own decoder, so the strip shows exactly those frames), each captioned
  with its `frame_timestamps` second; a video given as a folder of frame images takes the files in name order;
* what cannot be shown (data folder gone, undecodable file, a row without recorded frames) as a `missing` note.

Thumbnails are named by a hash of their source (bytes, or path + size + mtime) and frame index: samples sharing a
medium share its files and its decoding (MMBench's rotated copies, Video-MME's questions per video), and a second
report reuses the files already written. Decoding runs on a small thread pool (Pillow and PyAV release the GIL),
with a bounded number of media in flight so that a large benchmark is never held in memory.

This lives in `pipelines` because `evals` decodes no pixels (no Pillow, no PyAV: its metrics run anywhere);
`pipelines` may use `ernie_vl`'s decoders.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from evals.registry import get_benchmark
from evals.sample_browser import MediaHook, row_key

from .manifest import load_manifest

log = logging.getLogger("pipelines")

IMAGE_SIDE = 256
FRAME_SIDE = 128
JPEG_QUALITY = 80
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_EXIF_ORIENTATION = 0x0112


def _source_id(data: bytes | None, path: str | None) -> str:
    h = hashlib.sha1()
    if data is not None:
        h.update(b"bytes:" + data)
    else:
        st = os.stat(path)
        h.update(f"path:{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _save(image, side: int, dest: Path, name: str) -> None:
    """``image`` (PIL) shrunk to at most ``side`` px, written as ``dest/name`` (complete or absent)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")  # transparent pixels on white, as the processor composites them
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    image = image.convert("RGB")
    image.thumbnail((side, side))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    tmp = dest / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, dest / name)


def _image_job(data: bytes | None, path: str | None, dest: Path, name: str) -> None:
    from PIL import Image, ImageOps

    image = Image.open(io.BytesIO(data) if data is not None else path)
    if image.format == "JPEG":
        image.draft("RGB", (IMAGE_SIDE * 2, IMAGE_SIDE * 2))  # decode at a reduced scale: much faster, same thumbnail
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    _save(image, IMAGE_SIDE, dest, name)


def _frames(data: bytes | None, path: str | None, wanted: list[int]):
    """``(index, PIL image)`` of the wanted frames of a video file/bytes or a folder of frame images."""
    from PIL import Image

    if path and Path(path).is_dir():
        files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        yield from ((i, Image.open(files[i])) for i in wanted if 0 <= i < len(files))
        return
    from ernie_vl.video_decode import OpenedVideo

    video = OpenedVideo(data if data is not None else path, path or "video bytes")
    try:
        yield from ((i, Image.fromarray(rgb)) for i, rgb in video.frames(wanted))
    finally:
        video.close()


def _video_job(data: bytes | None, path: str | None, dest: Path, names: dict[int, str]) -> None:
    todo = sorted(i for i, name in names.items() if not (dest / name).is_file())
    done = set()
    for i, image in _frames(data, path, todo) if todo else ():
        _save(image, FRAME_SIDE, dest, names[i])
        done.add(i)
    if set(todo) - done:
        raise ValueError(f"frame(s) {sorted(set(todo) - done)} not in the video")


def _failure(future: Future) -> str | None:
    e = future.exception()
    return None if e is None else f"cannot decode ({type(e).__name__}: {str(e)[:160]})"


class _Thumbnailer:
    """Plans each row's entries and runs each distinct decoding once on the pool; :meth:`entries` after the jobs."""

    def __init__(self, dest: Path, pool: ThreadPoolExecutor, in_flight: int):
        self.dest, self.pool, self.in_flight = dest, pool, in_flight
        self.jobs: dict[str, Future] = {}
        self.running: set[Future] = set()

    def _submit(self, key: str, fn, *args) -> Future:
        if key not in self.jobs:
            while len(self.running) >= self.in_flight:  # bounded: the media bytes of pending jobs stay in memory
                _, self.running = wait(self.running, return_when=FIRST_COMPLETED)
            self.jobs[key] = self.pool.submit(fn, *args)
            self.running.add(self.jobs[key])
        return self.jobs[key]

    def plan(self, media: list, row: dict) -> list[tuple[dict, Future | None]]:
        """``(entry, job)`` per medium of a sample: the entry holds once its job has succeeded."""
        frames = iter(_split_frames(row, sum(m.kind == "video" for m in media)))
        out = []
        for m in media:
            entry = {"kind": m.kind, "name": Path(m.path).name if m.path else None}
            try:
                base = _source_id(m.data, m.path)
            except OSError as e:
                out.append(({**entry, "missing": f"cannot read ({e})"}, None))
                continue
            if m.kind == "image":
                src = base + ".jpg"
                job = None if (self.dest / src).is_file() else self._submit(src, _image_job, m.data, m.path, self.dest, src)
                out.append(({**entry, "src": src}, job))
                continue
            indices, stamps = next(frames)
            if not indices:
                out.append(({**entry, "missing": "no sampled frames recorded for this row"}, None))
                continue
            names = {int(i): f"{base}-f{int(i)}.jpg" for i in indices}
            stamps = stamps if stamps and len(stamps) == len(indices) else [None] * len(indices)
            strip = [{"src": names[int(i)], "i": int(i)} | ({} if t is None else {"t": round(float(t), 3)})
                     for i, t in zip(indices, stamps)]
            job = None
            if not all((self.dest / n).is_file() for n in names.values()):
                job = self._submit(f"{base}:{sorted(names)}", _video_job, m.data, m.path, self.dest, names)
            out.append(({**entry, "frames": strip}, job))
        return out

    @staticmethod
    def entries(planned: list[tuple[dict, Future | None]]) -> list[dict]:
        out = []
        for entry, job in planned:
            failed = job is not None and _failure(job)
            out.append({k: v for k, v in entry.items() if k not in ("src", "frames")} | {"missing": failed}
                       if failed else entry)
        return out


def _split_frames(row: dict, videos: int) -> list[tuple[list | None, list | None]]:
    """The row's frame indices/timestamps per video: all of them for one video; for several, equal shares when
    they divide evenly (the frame policy is per benchmark), else none (the row records them concatenated)."""
    idx, ts = row.get("frame_indices"), row.get("frame_timestamps")
    if videos <= 1:
        return [(idx, ts)] * videos
    if not idx or len(idx) % videos:
        return [(None, None)] * videos
    k = len(idx) // videos
    return [(idx[j * k:(j + 1) * k], ts[j * k:(j + 1) * k] if ts and len(ts) == len(idx) else None)
            for j in range(videos)]


def _data_paths(run_dirs: list) -> dict[str, str | None]:
    """Each benchmark's data path from the runs' manifests (the first run naming it wins; runs on any storage)."""
    out: dict[str, str | None] = {}
    for run in run_dirs:
        manifest = load_manifest(run)
        for name, entry in (manifest.get("benchmarks") or {}).items():
            out.setdefault(name, entry.get("data"))
    return out


def media_hook(*run_dirs, workers: int | None = None) -> MediaHook:
    """The hook for the rows of these runs (a report: one run; a comparison: A then B); ``workers`` decoding
    threads (default: the CPUs, at most 8)."""
    paths = _data_paths(list(run_dirs))
    workers = workers or min(8, os.cpu_count() or 1)

    def thumbnails(rows: list[dict], dest: Path) -> dict:
        dest.mkdir(parents=True, exist_ok=True)
        wanted = {row_key(r): r for r in rows if r.get("media_items") != 0}
        planned: dict[tuple, list] = {}
        missing: dict[tuple, list[dict]] = {}
        with ThreadPoolExecutor(workers, thread_name_prefix="thumbnails") as pool:
            thumbs = _Thumbnailer(dest, pool, in_flight=4 * workers)
            for bench_name in sorted({k[0] for k in wanted}):
                if bench_name not in paths and bench_name != "demo":
                    reason = "the run's manifest.json names no data folder for this benchmark"
                    missing.update({k: [{"kind": "media", "missing": reason}] for k in wanted if k[0] == bench_name})
                    continue
                for split in sorted({k[1] for k in wanted if k[0] == bench_name}):
                    keys = {k for k in wanted if k[0] == bench_name and k[1] == split}
                    try:
                        for sample in get_benchmark(bench_name).load(paths.get(bench_name), split=split or None):
                            key = (bench_name, split, str(sample.sample_id))
                            if key in keys:
                                planned[key] = thumbs.plan(sample.media, wanted[key])
                                keys.discard(key)
                                if not keys:
                                    break
                    except Exception as e:  # noqa: BLE001 - the data folder moved or broke: the rows say so
                        log.warning("report media: cannot read %s data %s: %s", bench_name, paths.get(bench_name), e)
                        reason = f"cannot read the benchmark data ({type(e).__name__}: {str(e)[:160]})"
                        missing.update({k: [{"kind": "media", "missing": reason}] for k in keys})
        return missing | {key: thumbs.entries(items) for key, items in planned.items()}

    return thumbnails
