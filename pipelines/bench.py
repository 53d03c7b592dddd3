"""End-to-end throughput: the Ray Data pipeline vs the bare engine loop, same samples, same machine.

    python -m pipelines.bench                       # 2-core laptop defaults, embedded tiny checkpoint
    python -m pipelines.bench --samples 512 --model DIR --batch-size 64 --json bench.json

Both sides do the whole job on the same synthetic image multiple-choice benchmark (written in the `demo` layout):
read samples with the evals reader, build prompts, run the processor, generate, detokenize, extract and score.

* **engine loop**: one process — load model + processor, then for each pack of `batch_size × pack_batches`
  samples: preprocess them one by one, `Engine.generate`, decode, score. What a user writes without Ray.
* **pipeline**: `run_eval` on a running Ray instance (the cluster start is reported separately: on a cluster it is
  already up): actor start-up and model load included, resume scan, Parquet writes, metrics and manifest included.

samples/s = samples / wall seconds, model load included on both sides; `steady_ratio` compares the rates after the
first output (start-up excluded: on a cluster the actors are the only fixed cost, a few seconds per job). The two alternate `--repeat` times in one
process (shared CPUs are noisy) and the ratio of the medians is reported; predictions are compared too. The
default checkpoint is a random `small` model (the CPU benchmark shape): the embedded tiny model generates so fast
that any fixed cost dominates. The goal in the issue is pipeline ≥ 0.9 × engine loop.

NOTE: Ray starts its workers at niceness 15 while the engine loop runs in this process at niceness 0, so on a
machine shared with other busy processes the comparison leans against the pipeline; quote ratios from quiet runs
(the summary records the 1-minute load average).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path


def write_synthetic_benchmark(folder: str | Path, n: int, image_size: int = 224, seed: int = 0,
                              video_every: int = 0) -> Path:
    """A `demo`-layout benchmark folder (samples.jsonl + images/) with `n` colour multiple-choice questions.

    Image sizes vary ±25 % around `image_size` so the visual token counts (and therefore the work per sample) differ,
    as in real benchmarks. `video_every > 0` makes every k-th sample a video question (needs PyAV).
    """
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    colours = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (230, 210, 40)}
    names = list(colours)
    rows = []
    video_file = None
    for i in range(n):
        name = names[i % 4]
        letters = "ABCD"
        opts = names[:]
        rng.shuffle(opts)
        if video_every and i % video_every == video_every - 1:
            if video_file is None:
                video_file = write_video(folder / "videos" / "clip.mp4", colours[name])
            media = [{"kind": "video", "file": "videos/clip.mp4"}]
        else:
            w = int(image_size * rng.uniform(0.75, 1.25))
            h = int(image_size * rng.uniform(0.75, 1.25))
            img = Image.new("RGB", (w, h), colours[name])
            for _ in range(6):  # some texture so PNG decoding is not trivial
                x, y = rng.randrange(w), rng.randrange(h)
                img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, min(w, x + w // 8), min(h, y + h // 8)))
            file = f"images/{i:06d}.png"
            img.save(folder / file)
            media = [{"kind": "image", "file": file}]
        rows.append({"id": f"s{i:06d}", "type": "mcq", "question": "What colour fills most of the picture?",
                     "options": dict(zip(letters, opts)), "answers": [letters[opts.index(name)]],
                     "media": media, "category": "colour"})
    with open(folder / "samples.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return folder


def write_video(path: str | Path, colour=(30, 60, 220), frames: int = 40, size: int = 64) -> Path:
    """A small real MPEG-4 video (a bar sweeping over a coloured background), decodable by PyAV."""
    import av
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for k in range(frames):
            arr = np.zeros((size, size, 3), np.uint8)
            arr[:] = colour
            arr[:, : (k * size) // frames] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def engine_loop(data: Path, model_path: Path, *, batch_size: int, batch_tokens: int, pack_batches: int,
                max_new_tokens: int, flavor: str = "official") -> dict:
    """The bare loop (see the module docstring). Returns timings and predictions by sample id."""
    t0 = time.perf_counter()
    from ernie_vl import Processor, load_model
    from ernie_vl.engine import Engine
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.tokenizer import Tokenizer
    from evals.registry import get_benchmark

    model = load_model(model_path)
    proc = Processor.from_pretrained(model_path)
    tok = Tokenizer.from_pretrained(model_path)
    engine = Engine(model, max_batch_size=batch_size, max_batch_tokens=batch_tokens)
    settings = GenerationSettings.from_checkpoint(model_path, model.config, max_new_tokens=max_new_tokens)
    bench = get_benchmark("demo")
    t_loaded = time.perf_counter()
    preds: dict[str, str] = {}
    first = None
    samples = list(bench.load(str(data)))
    chunk = batch_size * pack_batches
    generated = 0
    for k in range(0, len(samples), chunk):
        part = samples[k: k + chunk]
        reqs = []
        for s in part:
            reqs.append(proc.prepare(bench.build_messages(s, flavor)))
        gens = engine.generate(reqs, settings)
        for s, g in zip(part, gens):
            text = tok.decode(g.tokens, skip_special_tokens=True)
            bench.score(s.to_record(), text, flavor)
            preds[s.sample_id] = text
            generated += len(g.tokens)
        first = first or time.perf_counter()
    t1 = time.perf_counter()
    return {"wall_s": t1 - t0, "load_s": t_loaded - t0, "steady_s": t1 - (first or t1), "first_output_s": (first or t1) - t0,
            "samples": len(samples), "generated_tokens": generated, "predictions": preds}


def pipeline_run(data: Path, model_path: Path | None, out: Path, *, batch_size: int, batch_tokens: int,
                 pack_batches: int, max_new_tokens: int, replicas: int) -> dict:
    import pandas as pd

    from .batch_eval import run_eval
    from .config import BenchmarkSpec, EvalConfig

    cfg = EvalConfig(benchmarks=[BenchmarkSpec("demo", str(data))], out=str(out),
                     model=None if model_path is None else str(model_path), max_new_tokens=max_new_tokens,
                     batch_size=batch_size, batch_tokens=batch_tokens, pack_batches=pack_batches, replicas=replicas,
                     progress=False)
    t0 = time.perf_counter()
    res = run_eval(cfg)
    wall = time.perf_counter() - t0
    df = pd.read_parquet(out / "predictions")
    prog = res.manifest["benchmarks"]["demo"]["progress"]
    return {"wall_s": wall, "samples": int(len(df)), "failed": int(df["error"].notna().sum()),
            "generated_tokens": int(df["generated_tokens"].sum()), "progress": prog,
            "predictions": dict(zip(df["sample_id"], df["prediction"]))}


def bench_checkpoint(config: str) -> Path:
    """The checkpoint to measure: the embedded tiny one, or a random `small` one (the CPU benchmark shape of
    `ernie_vl.config`, ~0.8 GB) built once under $ERNIE_VL_HOME with 64 MiB shards."""
    from ernie_vl.tiny import default_model_path

    if config == "tiny":
        return default_model_path()
    from ernie_vl.config import named_config
    from ernie_vl.tiny import make_tiny

    home = Path(os.environ.get("ERNIE_VL_HOME", Path.home() / ".cache" / "ernie_vl"))
    path = home / f"bench-{config}-v1"
    if not (path / "model.safetensors.index.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-{config}-", dir=home))
        make_tiny(tmp, seed=0, config=named_config(config), max_shard_bytes=64 << 20)
        if not (path / "model.safetensors.index.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options of the benchmark (also used by `python -m ernie_vl.bench pipeline`)."""
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--config", choices=["tiny", "small"], default="small",
                    help="random checkpoint shape when --model is not given (default: small)")
    ap.add_argument("--model", help="checkpoint folder (overrides --config)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--pack-batches", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    ap.add_argument("--repeat", type=int, default=2, help="alternate engine loop and pipeline this many times")
    ap.add_argument("--json", help="also write the results here")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(a: argparse.Namespace) -> int:
    """Run the benchmark with parsed options; prints per-repeat lines and a JSON summary."""
    model_path = Path(a.model) if a.model else bench_checkpoint(a.config)
    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    started = False
    try:
        data = write_synthetic_benchmark(work / "data", a.samples, a.image_size)
        kw = dict(batch_size=a.batch_size, batch_tokens=a.batch_tokens, pack_batches=a.pack_batches,
                  max_new_tokens=a.max_new_tokens)
        import ray

        from replicas.session import ensure_ray

        t = time.perf_counter()
        started = ensure_ray(a.num_cpus)
        ray_init_s = time.perf_counter() - t
        runs = []
        for r in range(a.repeat):
            e = engine_loop(data, model_path, **kw)
            p = pipeline_run(data, model_path, work / f"out{r}", replicas=a.replicas, **kw)
            same = sum(e["predictions"].get(k) == v for k, v in p["predictions"].items())
            chunk = min(a.samples, a.batch_size * a.pack_batches)  # rows of the first output on both sides
            pp = p["progress"]
            e_steady = (a.samples - chunk) / e["steady_s"] if e["steady_s"] > 0 else None
            p_steady = ((a.samples - chunk) / (pp["elapsed_s"] - pp["first_row_s"])
                        if pp.get("first_row_s") is not None and pp["elapsed_s"] > pp["first_row_s"] else None)
            runs.append({"engine_wall_s": round(e["wall_s"], 2), "engine_load_s": round(e["load_s"], 2),
                         "pipeline_wall_s": round(p["wall_s"], 2), "pipeline_failed": p["failed"],
                         "ratio": round(e["wall_s"] / p["wall_s"], 3),
                         "pipeline_first_row_s": pp.get("first_row_s"),
                         "steady_ratio": round(p_steady / e_steady, 3) if e_steady and p_steady else None,
                         "identical_predictions": f"{same}/{len(p['predictions'])}"})
            print(json.dumps({"repeat": r, **runs[-1]}), flush=True)
        e_wall = _median([x["engine_wall_s"] for x in runs])
        p_wall = _median([x["pipeline_wall_s"] for x in runs])
        summary = {
            "machine": {"cpus": os.cpu_count(), "cuda": _cuda_name(), "load_avg_1m": os.getloadavg()[0]},
            "settings": {**vars(a), "model": str(model_path)},
            "ray_init_s": round(ray_init_s, 2),
            "runs": runs,
            "engine_loop_samples_per_s": round(a.samples / e_wall, 3),
            "pipeline_samples_per_s": round(a.samples / p_wall, 3),
            "ratio_pipeline_over_engine": round(e_wall / p_wall, 3),
            "steady_ratio_median": _median([x["steady_ratio"] for x in runs if x["steady_ratio"]] or [0.0]),
        }
        print(json.dumps(summary, indent=2))
        if a.json:
            Path(a.json).write_text(json.dumps(summary, indent=2) + "\n")
        return 0
    finally:
        if started:
            import ray

            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def _cuda_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    sys.exit(main())
