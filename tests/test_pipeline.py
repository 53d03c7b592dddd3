"""The batch pipeline end to end on a local Ray (num_cpus=2) with the tiny checkpoint — real Ray, Parquet and model.

Covers: the demo, every published file format through the evals readers, bad samples as error rows, predictions
identical to the engine run directly, fingerprint changes (new run, old one kept and restored), resume after
kill -9 of the driver (the CLI in a subprocess), and after a replica actor is killed mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import ray  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip

from cluster_support import processes_named  # noqa: E402
from pipelines.batch_eval import run_eval  # noqa: E402
from pipelines.bench import write_synthetic_benchmark, write_video  # noqa: E402
from pipelines.config import BenchmarkSpec, EvalConfig  # noqa: E402
from pipelines.schema import PREDICTION_NAMES  # noqa: E402

try:
    from evals_fixtures import formats as F
except ImportError:  # tests/ imported as a package
    from tests.evals_fixtures import formats as F

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_session():
    started = not ray.is_initialized()
    if started:
        from ernie_vl.worker_env import worker_env

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": worker_env()})
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def evaluate(out, *specs, **kw):
    kw.setdefault("progress", False)
    return run_eval(EvalConfig(benchmarks=list(specs), out=str(out), **kw))


def predictions(out) -> pd.DataFrame:
    return pd.read_parquet(Path(out) / "predictions")


def assert_exactly_once(out, expected_ids):
    df = predictions(out)
    assert not df.duplicated(["benchmark", "split", "sample_id"]).any(), "a sample was written twice"
    assert sorted(df["sample_id"]) == sorted(expected_ids)
    return df


# ------------------------------------------------------------------------------------------------ demo


# the first packaged demo questions: one image, two images (which-000) and video (direction-000, final_colour-000)
DEMO_LIMIT = 14


def demo_spec(limit: int = DEMO_LIMIT) -> BenchmarkSpec:
    return BenchmarkSpec("demo", limit=limit)


@pytest.fixture(scope="module")
def demo_run(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "results"
    t0 = time.perf_counter()
    res = evaluate(out, demo_spec())
    return out, res, time.perf_counter() - t0


def test_demo_end_to_end(demo_run):
    out, res, _ = demo_run
    df = predictions(out)
    assert len(df) == DEMO_LIMIT and df["sample_id"].is_unique
    assert list(df.columns) == PREDICTION_NAMES
    assert df["error"].isna().all(), df["error"].dropna().tolist()
    assert df["reasoning"].isna().all()  # no --thinking: the whole decoded text is the prediction
    assert (df["prediction"].str.len() > 0).all() and (df["generated_tokens"] > 0).all()
    assert (df["prompt_tokens"] > df["visual_tokens"]).all() and (df["visual_tokens"] > 0).all()
    assert df["fingerprint"].nunique() == 1 and df["score"].notna().all()
    assert (df["media_items"] == 2).sum() == 1  # the two-image question
    video = df[df["category"] == "video"]
    assert len(video) == 2 and all(len(f) == 4 for f in video["frame_indices"])
    assert all(len(t) == 4 for t in video["frame_timestamps"])
    assert df[df["category"] != "video"]["frame_indices"].isna().all()
    metrics = pd.read_parquet(out / "metrics.parquet")
    from evals.aggregate import METRIC_NAMES

    assert list(metrics.columns) == METRIC_NAMES and {"stderr", "ci_low", "ci_high", "resamples"} <= set(METRIC_NAMES)
    overall = metrics[(metrics.metric == "accuracy") & metrics.category.isna()]
    assert len(overall) == 1 and overall["n"].iloc[0] == DEMO_LIMIT
    m = json.loads((out / "manifest.json").read_text())
    b = m["benchmarks"]["demo"]
    assert (b["total"], b["done"], b["failed"], b["skipped"], b["missing"]) == (DEMO_LIMIT, DEMO_LIMIT, 0, 0, 0)
    assert b["fingerprint"] == df["fingerprint"].iloc[0] and b["status"] == "complete"
    assert {"checkpoint", "generation", "flavor", "packages", "benchmark_version"} <= set(b["fingerprint_parts"])
    assert b["progress"]["samples_per_s"] > 0 and m["last_run"]["status"] == "complete"
    assert res.complete


def test_pipeline_metrics_equal_ernie_vl_score(demo_run, tmp_path):
    """One metrics path: `ernie-vl score` on the run's own predictions writes the pipeline's metrics.parquet again,
    row for row, and a Ray worker sees the driver's ERNIE_VL_HOME (the one worker environment)."""
    import shutil

    from pipelines.cli import main

    out, res, _ = demo_run
    copy = tmp_path / "rescored"
    shutil.copytree(out, copy)
    (copy / "metrics.parquet").unlink()
    assert main(["score", str(copy)]) == 0
    pipeline, score = pq.read_table(out / "metrics.parquet"), pq.read_table(copy / "metrics.parquet")
    assert pipeline.num_rows > 0 and set(pipeline.column("flavor").to_pylist()) == {"official"}
    assert pipeline.equals(score), (pipeline.to_pylist(), score.to_pylist())
    assert pipeline.to_pylist() == res.metrics
    home = ray.get(ray.remote(num_cpus=0.01)(lambda: os.environ.get("ERNIE_VL_HOME")).remote())
    assert home == os.environ["ERNIE_VL_HOME"]


def test_rerun_skips_everything(demo_run):
    out, _, _ = demo_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "predictions").iterdir()}
    res = evaluate(out, demo_spec())
    b = res.manifest["benchmarks"]["demo"]
    assert (b["written"], b["skipped"], b["rows"]) == (0, DEMO_LIMIT, DEMO_LIMIT)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "predictions").iterdir()} == before


def test_predictions_identical_to_the_engine_run_directly(demo_run):
    """Same samples, same processor calls, one `Engine.generate` over all of them in this process."""
    import torch

    from ernie_vl import Processor, load_model
    from ernie_vl.engine import Engine
    from ernie_vl.generation import GenerationSettings
    from ernie_vl.inputs import ModelInputs
    from ernie_vl.tiny import default_model_path
    from evals.registry import get_benchmark

    out, res, _ = demo_run
    path = default_model_path()
    threads = torch.get_num_threads()
    torch.set_num_threads(res.manifest["last_run"]["resources"]["torch_threads"])
    try:
        model = load_model(path)
        proc = Processor.from_pretrained(path)
        bench = get_benchmark("demo")
        samples = list(bench.load(None, DEMO_LIMIT))
        reqs = []
        for s in samples:
            kw = {}
            if any(m.kind == "video" for m in s.media):
                kw = dict(bench.video_sampling, min_frames=4)
            o = proc.apply_chat_template(bench.build_messages(s, "official"), add_generation_prompt=True,
                                         tokenize=True, return_dict=True, return_tensors="pt", **kw)
            reqs.append(ModelInputs.build(o["input_ids"][0], proc.media_tokens, o.get("pixel_values"),
                                          o.get("image_grid_thw"), o.get("pixel_values_videos"), o.get("video_grid_thw")))
        engine = Engine(model, max_batch_size=16, max_batch_tokens=16384, reuse=False)  # the pipeline reuses
        eos = json.loads((path / "generation_config.json").read_text())["eos_token_id"]
        gens = engine.generate(reqs, GenerationSettings(max_new_tokens=32, eos_token_id=tuple(eos)))
    finally:
        torch.set_num_threads(threads)
    direct = {s.sample_id: proc.decode(g.tokens, skip_special_tokens=True) for s, g in zip(samples, gens)}
    df = predictions(out)
    assert dict(zip(df["sample_id"], df["prediction"])) == direct
    assert dict(zip(df["sample_id"], df["generated_tokens"])) == {s.sample_id: len(g.tokens) for s, g in zip(samples, gens)}


def test_changed_fingerprint_is_a_new_run_and_the_old_one_comes_back(demo_run, tmp_path):
    import shutil

    src, _, _ = demo_run
    out = tmp_path / "results"
    shutil.copytree(src, out)
    old_fp = predictions(out)["fingerprint"].iloc[0]
    res = evaluate(out, demo_spec(3), max_new_tokens=4)  # settings changed
    df = predictions(out)
    assert len(df) == 3 and df["fingerprint"].nunique() == 1 and df["fingerprint"].iloc[0] != old_fp
    assert (df["generated_tokens"] <= 4).all()
    archived = out / "runs" / f"demo-{old_fp[:12]}"
    assert len(pd.read_parquet(archived / "predictions")) == DEMO_LIMIT and (archived / "manifest.json").is_file()
    assert any("fingerprint changed" in n and "max_new_tokens" in n for n in res.notes)
    res = evaluate(out, demo_spec())  # the original settings again: restored, nothing recomputed
    assert res.manifest["benchmarks"]["demo"]["written"] == 0
    assert predictions(out)["fingerprint"].unique().tolist() == [old_fp]


# ------------------------------------------------------------------------------------------------ formats + bad rows


RED, BLUE = F.png_bytes((255, 0, 0), (40, 40)), F.jpeg_bytes((0, 0, 255), (40, 40))


def test_published_formats_and_bad_samples(ray_session, tmp_path):
    """VLMEvalKit TSV, Hugging Face Parquet, original JSON + files, a video benchmark, and a demo folder with bad
    samples — one pipeline run; every sample comes out exactly once, bad ones as error rows."""
    tsv = F.write_tsv(tmp_path / "MMBench_DEV_EN.tsv", [
        {"index": 1, "question": "What colour?", "A": "red", "B": "blue", "answer": "A", "split": "dev",
         "category": "colour", "image": F.b64(RED)},
        {"index": 1000001, "question": "What colour?", "A": "blue", "B": "red", "answer": "B", "split": "dev",
         "category": "colour", "image": "1"},
        {"index": 2, "question": "Bad image", "A": "x", "B": "y", "answer": "A", "split": "dev",
         "image": "!!notbase64!!" * 9},
    ])
    pope = tmp_path / "pope"
    F.write_parquet(pope / "data" / "test-00000-of-00001.parquet", [
        {"id": "1", "question_id": "1", "question": "Is there a dog?", "answer": "no", "image_source": "x",
         "category": "random", "image": F.image_struct(RED)},
        {"id": "2", "question_id": "2", "question": "Is there a cat?", "answer": "yes", "image_source": "y",
         "category": "popular", "image": F.image_struct(BLUE)},
    ])
    doc = tmp_path / "docvqa"
    F.write_image(doc / "documents" / "a.png", RED)
    F.write_json(doc / "val_v1.0_withQT.json", {"dataset_name": "docvqa", "data": [
        {"questionId": 7, "question": "Title?", "image": "documents/a.png", "docId": 1, "answers": ["red"]}]})
    vid = tmp_path / "videomme"
    F.write_parquet(vid / "videomme" / "test-00000-of-00001.parquet", [
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "History", "url": "u",
         "videoID": "clip", "question_id": "001-1", "task_type": "Counting Problem", "question": "How many?",
         "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "C"}], image_columns=(), list_columns=("options",))
    write_video(vid / "data" / "clip.mp4")
    bad = write_synthetic_benchmark(tmp_path / "bad", 3, image_size=40)
    (bad / "images" / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # passes the magic check only
    (bad / "images" / "000002.png").unlink()  # missing file: the reader flags it
    rows = [json.loads(x) for x in (bad / "samples.jsonl").read_text().splitlines()]
    rows.append(dict(rows[0], id="long", question="why " * 7000))  # over-long prompt
    (bad / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "out"
    res = evaluate(out, BenchmarkSpec("mmbench", str(tsv)), BenchmarkSpec("pope", str(pope)),
                   BenchmarkSpec("docvqa", str(doc)), BenchmarkSpec("videomme", str(vid)),
                   BenchmarkSpec("demo", str(bad)), max_new_tokens=8, max_prompt_tokens=6000)
    df = predictions(out)
    assert not df.duplicated(["benchmark", "split", "sample_id"]).any()
    got = {b: sorted(g["sample_id"]) for b, g in df.groupby("benchmark")}
    assert got == {"mmbench": ["1", "1000001", "2"], "pope": ["1", "2"], "docvqa": ["7"], "videomme": ["001-1"],
                   "demo": ["long", "s000000", "s000001", "s000002"]}
    err = {k: (None if pd.isna(e) else e) for k, e in zip(df["benchmark"] + "/" + df["sample_id"], df["error"])}
    assert err["mmbench/2"].startswith("input:") and "base64" in err["mmbench/2"]
    assert err["demo/s000001"].startswith("media:")
    assert err["demo/s000002"].startswith("input:") and "not found" in err["demo/s000002"]
    assert err["demo/long"].startswith("prompt_too_long:")
    ok = ["mmbench/1", "mmbench/1000001", "pope/1", "pope/2", "docvqa/7", "demo/s000000", "videomme/001-1"]
    assert not {k: err[k] for k in ok if err[k] is not None}
    # Video-MME samples 32 frames: 5k+ visual tokens, which the tiny model's 32,768 positions hold (its 4,096 did not)
    v = df[df.benchmark == "videomme"].iloc[0]
    assert len(v["frame_indices"]) == 32 and 4096 < v["visual_tokens"] < v["prompt_tokens"] <= 6000
    assert v["generated_tokens"] > 0
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert set(metrics["benchmark"]) == {"mmbench", "pope", "docvqa", "videomme", "demo"}
    assert not res.manifest["benchmarks"]["videomme"].get("errors")
    b = res.manifest["benchmarks"]["demo"]
    assert b["failed"] == 3 and b["errors"] == {"media": 1, "input": 1, "prompt_too_long": 1}
    assert res.manifest["benchmarks"]["mmbench"]["errors"] == {"input": 1}
    # failed rows are rows: a rerun writes nothing
    again = evaluate(out, BenchmarkSpec("demo", str(bad)), max_new_tokens=8, max_prompt_tokens=6000)
    assert again.manifest["benchmarks"]["demo"]["written"] == 0


# ------------------------------------------------------------------------------------------------ faults



def _parts(out) -> list[Path]:
    pred = Path(out) / "predictions"
    return sorted(pred.glob("part-*.parquet")) if pred.is_dir() else []


N_FAULT = 40


@pytest.fixture(scope="module")
def fault_data(tmp_path_factory):
    return write_synthetic_benchmark(tmp_path_factory.mktemp("fault") / "data", N_FAULT, image_size=40)


def test_replica_killed_mid_run_every_sample_exactly_once(ray_session, fault_data, tmp_path):
    out = tmp_path / "out"
    result, errors = {}, []

    def run():
        try:
            result["r"] = evaluate(out, BenchmarkSpec("demo", str(fault_data)), batch_size=4, pack_batches=1)
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    th = threading.Thread(target=run)
    th.start()
    killed, deadline = None, time.monotonic() + 240
    while th.is_alive() and time.monotonic() < deadline:
        if killed is None and _parts(out):
            pids = processes_named("MapBatches(ReplicaStage)")
            if pids:
                os.kill(pids[0], signal.SIGKILL)  # the replica process dies mid-run (OOM killer, segfault...)
                killed = (pids[0], len(_parts(out)))
        time.sleep(0.02)
    th.join(timeout=60)
    assert not errors, errors
    assert killed is not None and killed[1] < N_FAULT // 4, "the replica was not killed mid-run"
    assert_exactly_once(out, [f"s{i:06d}" for i in range(N_FAULT)])
    assert result["r"].manifest["benchmarks"]["demo"]["failed"] == 0
    assert killed[0] not in processes_named("MapBatches(ReplicaStage)")


@pytest.mark.subprocess
def test_driver_kill_9_then_rerun_every_sample_exactly_once(ray_session, fault_data, tmp_path):
    out = tmp_path / "out"
    from ernie_vl.tiny import default_model_path

    cmd = [sys.executable, "-m", "ernie_vl_cli", "eval", "--benchmark", "demo", "--data", str(fault_data),
           "--out", str(out), "--batch-size", "4", "--quiet", "--model", str(default_model_path())]  # 32 tokens a row
    env = dict(os.environ, RAY_ADDRESS=ray_session, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while proc.poll() is None and not _parts(out) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    first = predictions(out)
    assert 0 < len(first) < N_FAULT and not first["sample_id"].duplicated().any()
    (out / "predictions" / ".tmp-part-demo-000000000000-0000000000000000.parquet-dead").write_bytes(b"PAR1")  # torn write

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    df = assert_exactly_once(out, [f"s{i:06d}" for i in range(N_FAULT)])
    assert df.loc[df.sample_id.isin(first.sample_id)].set_index("sample_id")["prediction"].sort_index().equals(
        first.set_index("sample_id")["prediction"].sort_index())  # the first run's rows were kept, not redone
    m = json.loads((out / "manifest.json").read_text())
    b = m["benchmarks"]["demo"]
    assert (b["skipped"], b["written"], b["missing"]) == (len(first), N_FAULT - len(first), 0)
    assert not list((out / "predictions").glob(".tmp-*"))
    assert f"{N_FAULT}/{N_FAULT} rows" in done.stdout
    assert all(pq.read_schema(p).names == PREDICTION_NAMES for p in _parts(out))


# ------------------------------------------------------------------------------------------------ CLI and options


def test_split_option_evaluates_that_split_fingerprinted_and_refuses_an_empty_one(ray_session, tmp_path):
    """`--split`: the run reads the named split's files only, its fingerprint and manifest say which split (the
    default split's run is another fingerprint), and a split with no sample is refused before anything runs."""
    from evals.errors import DatasetError
    from pipelines.batch_eval import check_inputs

    pope = tmp_path / "pope"
    row = {"id": "1", "question_id": "1", "question": "Is there a dog?", "answer": "no", "image_source": "x",
           "category": "random", "image": F.image_struct(RED)}
    F.write_parquet(pope / "data" / "test-00000-of-00001.parquet", [row, dict(row, id="2", question_id="2")])
    F.write_parquet(pope / "data" / "dev-00000-of-00001.parquet", [dict(row, id="9", question_id="9")])
    out = tmp_path / "out"
    res = evaluate(out, BenchmarkSpec("pope", str(pope), split="dev"), max_new_tokens=4)
    df = predictions(out)
    assert df[["split", "sample_id"]].values.tolist() == [["dev", "9"]]
    entry = res.manifest["benchmarks"]["pope"]
    assert entry["split"] == "dev" and entry["fingerprint_parts"]["split"] == "dev"
    default = evaluate(tmp_path / "out2", BenchmarkSpec("pope", str(pope)), max_new_tokens=4)
    assert default.manifest["benchmarks"]["pope"]["split"] == "test"
    assert "split" not in default.manifest["benchmarks"]["pope"]["fingerprint_parts"]  # earlier runs' fingerprints
    assert default.manifest["benchmarks"]["pope"]["fingerprint"] != entry["fingerprint"]
    with pytest.raises(DatasetError, match="splits found: \\['dev', 'test'\\]"):
        check_inputs(EvalConfig(benchmarks=[BenchmarkSpec("pope", str(pope), split="nope")], out=str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()
    # a reader that filters rows by their split column yields nothing for another split: refused as well
    tsv = F.write_tsv(tmp_path / "MMBench_DEV_EN.tsv", [
        {"index": 1, "question": "Q?", "A": "a", "B": "b", "answer": "A", "split": "dev", "image": F.b64(RED)}])
    with pytest.raises(DatasetError, match="mmbench: no sample of split 'test' there"):
        check_inputs(EvalConfig(benchmarks=[BenchmarkSpec("mmbench", str(tsv), split="test")], out=str(tmp_path / "x")))
    check_inputs(EvalConfig(benchmarks=[BenchmarkSpec("mmbench", str(tsv), split="dev")], out=str(tmp_path / "x")))


def test_cli_arguments_and_expert_shards():
    import argparse

    from pipelines.cli import _benchmark_specs, add_eval_commands

    p = argparse.ArgumentParser()
    add_eval_commands(p.add_subparsers(dest="command"))
    a = p.parse_args(["eval", "--benchmark", "mmbench,pope", "--data", "pope=/p", "--data", "/m", "--out", "o"])
    assert [(s.name, s.data) for s in _benchmark_specs(a)] == [("mmbench", "/m"), ("pope", "/p")]
    a = p.parse_args(["eval", "--benchmark", "mmbench,pope", "--data", "/m", "--data", "/p", "--out", "o",
                      "--split", "dev", "--split", "pope=adversarial"])
    assert [(s.name, s.split) for s in _benchmark_specs(a)] == [("mmbench", "dev"), ("pope", "adversarial")]
    a = p.parse_args(["eval", "--benchmark", "pope", "--data", "/p", "--out", "o", "--split", "mme=test"])
    with pytest.raises(ValueError, match="'mme' is not one of the benchmarks"):
        _benchmark_specs(a)
    a = p.parse_args(["eval", "--benchmark", "demo", "--out", "o", "--expert-shards", "2"])
    assert a.expert_shards == 2 and a.func.__name__ == "cmd_eval"
    with pytest.raises(ValueError, match="expert_shards must be >= 1"):
        run_eval(EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="/tmp/never-written", expert_shards=0))
    assert not Path("/tmp/never-written").exists()


def test_expert_shards_2_writes_the_same_predictions(demo_run, tmp_path):
    """`--expert-shards 2`: each replica is a gang of 2 rank actors (gloo), yet the predictions equal K=1's."""
    out1, _, _ = demo_run
    out2 = tmp_path / "ep2"
    evaluate(out2, demo_spec(), expert_shards=2)
    cols = ["sample_id", "prediction", "extracted", "generated_tokens", "error"]
    a = predictions(out1)[cols].sort_values("sample_id").reset_index(drop=True)
    b = predictions(out2)[cols].sort_values("sample_id").reset_index(drop=True)
    assert len(b) == DEMO_LIMIT and b["error"].isna().all()
    pd.testing.assert_frame_equal(a, b)


def _circular_mmbench(path: Path, n_questions: int = 3) -> Path:
    """A VLMEvalKit MMBench TSV with every question's 4 rotated copies (index k*1e6 + base; copies name the base
    row's image by its index, as the published files do)."""
    import base64
    import io

    from PIL import Image

    rows = []
    hint = "Look at the picture carefully and think about what it shows before you answer the question below."
    options = ["a red square", "a blue circle", "a green triangle", "a yellow star"]
    images = {}
    for q in range(1, n_questions + 1):
        buf = io.BytesIO()
        Image.new("RGB", (112, 112), (40 * q, 255 - 50 * q, 90)).save(buf, format="PNG")
        images[q] = buf.getvalue()
    for k in range(4):  # every base row first, then each round of copies, as the published files list them
        for q in range(1, n_questions + 1):
            rot = options[k:] + options[:k]
            rows.append({"index": k * 1_000_000 + q, "question": f"Which shape is in picture number {q}?",
                         "hint": hint, **dict(zip("ABCD", rot)), "answer": "ABCD"[(4 - k) % 4],
                         "category": "shape", "l2-category": "perception", "split": "dev",
                         "image": base64.b64encode(images[q]).decode() if k == 0 else str(q)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_reuse_on_circular_mmbench_gives_the_predictions_of_no_reuse(ray_session, tmp_path):
    """Rotated copies of a question share its image and the prompt before the options: the replica encodes each
    image once and prefills the shared prefix once, and the predictions equal those of `--no-reuse`."""
    data = _circular_mmbench(tmp_path / "MMBench_DEV_EN.tsv")
    runs = {}
    for reuse in (True, False):
        out = tmp_path / f"reuse-{reuse}"
        # blocks of 2 x 4 rows: without regrouping by media, a question's copies (3 rows apart) would be split
        res = evaluate(out, BenchmarkSpec("mmbench", data=str(data)), reuse=reuse, max_new_tokens=4, batch_size=2)
        assert res.complete
        manifest = json.loads((out / "manifest.json").read_text())
        runs[reuse] = (predictions(out).sort_values("sample_id").reset_index(drop=True),
                       manifest["benchmarks"]["mmbench"]["reuse"])
    (with_df, with_reuse), (without_df, without_reuse) = runs[True], runs[False]
    assert len(with_df) == 12 and with_df["error"].isna().all(), with_df["error"].dropna().tolist()
    cols = ["sample_id", "prediction", "extracted", "score", "generated_tokens", "prompt_tokens"]
    pd.testing.assert_frame_equal(with_df[cols], without_df[cols])
    assert with_reuse["media_reused"] > 0 and with_reuse["prefix_tokens_reused"] > 0, with_reuse
    assert with_reuse["media_encoded"] + with_reuse["media_reused"] == 12 == without_reuse["media_encoded"]
    assert without_reuse["media_reused"] == without_reuse["prefix_tokens_reused"] == 0
    assert with_df["reused_prompt_tokens"].sum() == with_reuse["prefix_tokens_reused"]
    # per question one row computes the image and the prompt up to the options, its three other copies reuse them
    assert (with_df["reused_prompt_tokens"] > 0).sum() == 9 and with_df["reused_media"].sum() == 9
    assert (with_df["media_items"] == 1).all()
