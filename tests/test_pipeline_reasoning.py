"""Reasoning and short videos in the batch job (issue 14), end to end on a local Ray with real checkpoints, Parquet
and PyAV videos.

A thinking run uses the crafted checkpoint of `scripted_model` (it answers any prompt ending in `<think>` with a fixed
script, through the real model and engine), so the test asserts on what the pipeline does with a known generation,
not on a random model's noise. The preprocessing stage is also run directly (no Ray) where only its decisions matter:
which rows reason, which frames a flavor samples from a short clip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ray  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip

from pipelines.bench import write_video  # noqa: E402
from pipelines.cli import main  # noqa: E402

pytestmark = pytest.mark.ray

try:
    from evals_fixtures import formats as F
    from scripted_model import make_scripted
except ImportError:  # tests/ imported as a package
    from tests.evals_fixtures import formats as F
    from tests.scripted_model import make_scripted

SCRIPT = " The color is red.\n</think>B"
REASONING = "The color is red."


@pytest.fixture(scope="module")
def ray_session():
    started = not ray.is_initialized()
    if started:
        from ernie_vl.worker_env import worker_env

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": worker_env()})
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    return make_scripted(tmp_path_factory.mktemp("scripted") / "ckpt", SCRIPT)


@pytest.fixture(scope="module")
def mmbench(tmp_path_factory):
    """A VLMEvalKit MMBench TSV: two questions, right answers B and A (the scripted model always says B)."""
    d = tmp_path_factory.mktemp("mmbench")
    return F.write_tsv(d / "MMBench_DEV_EN.tsv", [
        {"index": 1, "question": "What colour is the square?", "A": "blue", "B": "red", "answer": "B", "split": "dev",
         "category": "colour", "image": F.b64(F.png_bytes((255, 0, 0)))},
        {"index": 2, "question": "What colour is the sky?", "A": "blue", "B": "red", "answer": "A", "split": "dev",
         "category": "colour", "image": F.b64(F.png_bytes((0, 0, 255)))},
    ])


def eval_cli(out: Path, data: Path, model: Path, *flags: str) -> pd.DataFrame:
    rc = main(["eval", "--benchmark", "mmbench", "--data", str(data), "--model", str(model), "--out", str(out),
               "--quiet", *flags])
    assert rc == 0
    return pd.read_parquet(out / "predictions").sort_values("sample_id").reset_index(drop=True)


def test_thinking_run_splits_reasoning_and_scores_the_answer(ray_session, scripted, mmbench, tmp_path):
    df = eval_cli(tmp_path / "think", mmbench, scripted, "--thinking", "--max-new-tokens", "32")
    assert df["error"].isna().all(), df["error"].tolist()
    assert df["reasoning"].tolist() == [REASONING, REASONING]
    assert df["prediction"].tolist() == ["B", "B"] and df["extracted"].tolist() == ["B", "B"]
    assert df["score"].tolist() == [float(t == "B") for t in df["target"]] == [1.0, 0.0]
    assert df["finish_reason"].tolist() == ["stop", "stop"]
    ids = _tokenizer(scripted).encode(SCRIPT)
    assert df["generated_tokens"].tolist() == [len(ids) + 1] * 2  # the script and EOS
    m = json.loads((tmp_path / "think" / "manifest.json").read_text())
    b = m["benchmarks"]["mmbench"]
    assert b["thinking"] is True
    assert b["fingerprint_parts"]["thinking"] == {"enable_thinking": True, "max_answer_tokens": None}
    assert m["last_run"]["config"]["thinking"] is True


def test_budget_spent_inside_the_reasoning(ray_session, scripted, mmbench, tmp_path):
    """--max-new-tokens counts reasoning tokens: 5 tokens end before </think> -> 'length', empty answer scored as
    unanswered, the reasoning written so far kept."""
    df = eval_cli(tmp_path / "short", mmbench, scripted, "--thinking", "--max-new-tokens", "5")
    ids = _tokenizer(scripted).encode(SCRIPT)
    partial = _tokenizer(scripted).decode(ids[:5], skip_special_tokens=True).strip()
    assert partial and "</think>" not in partial
    assert df["error"].isna().all(), df["error"].tolist()
    assert df["finish_reason"].tolist() == ["length", "length"]
    assert df["prediction"].tolist() == ["", ""] and df["reasoning"].tolist() == [partial, partial]
    assert df["extracted"].isna().all() and df["score"].tolist() == [0.0, 0.0]


def test_answer_cap_and_thinking_off(ray_session, scripted, mmbench, tmp_path):
    """--max-answer-tokens 0 ends each row at its </think>; the same data without --thinking has no reasoning column
    values and another fingerprint."""
    df = eval_cli(tmp_path / "cap", mmbench, scripted, "--thinking", "--max-answer-tokens", "0")
    assert df["finish_reason"].tolist() == ["length", "length"]
    assert df["reasoning"].tolist() == [REASONING, REASONING] and df["prediction"].tolist() == ["", ""]
    off = eval_cli(tmp_path / "off", mmbench, scripted, "--max-new-tokens", "4")
    assert off["error"].isna().all() and off["reasoning"].isna().all()
    assert off["fingerprint"].iloc[0] != df["fingerprint"].iloc[0]
    m = json.loads((tmp_path / "off" / "manifest.json").read_text())["benchmarks"]["mmbench"]
    assert m["thinking"] is False and "thinking" not in m["fingerprint_parts"]


def _tokenizer(path):
    from ernie_vl.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(path)


# ------------------------------------------------------------------------------------------------ short videos


def _videomme(root: Path, frames: int) -> Path:
    F.write_parquet(root / "videomme" / "test-00000-of-00001.parquet", [
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "History", "url": "u",
         "videoID": "clip", "question_id": "001-1", "task_type": "Counting Problem", "question": "How many?",
         "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "C"}], image_columns=(), list_columns=("options",))
    write_video(root / "data" / "clip.mp4", frames=frames)
    return root


def test_ten_frame_video_in_a_videomme_run_is_a_normal_row(ray_session, tmp_path):
    """Video-MME asks 32 frames; a 10-frame clip (real PyAV file) is sampled as transformers caps other policies
    (every frame once), and the row is answered and scored, not an error."""
    data = _videomme(tmp_path / "videomme", frames=10)
    out = tmp_path / "out"
    rc = main(["eval", "--benchmark", "videomme", "--data", str(data), "--out", str(out), "--quiet",
               "--max-new-tokens", "4"])
    assert rc == 0
    row = pd.read_parquet(out / "predictions").iloc[0]
    assert pd.isna(row["error"]), row["error"]
    assert list(row["frame_indices"]) == list(range(10))
    assert list(row["frame_timestamps"]) == pytest.approx([i / 8.0 for i in range(10)])  # written at 8 fps
    assert isinstance(row["prediction"], str) and row["score"] in (0.0, 1.0)
    assert row["finish_reason"] in ("stop", "length") and row["generated_tokens"] > 0
    assert 0 < row["visual_tokens"] < row["prompt_tokens"]
    m = json.loads((out / "manifest.json").read_text())["benchmarks"]["videomme"]
    assert m["failed"] == 0 and m["fingerprint_parts"]["video_sampling"] == {"num_frames": 32,
                                                                              "short_video": "every_frame"}


def _prepare(flavor: str, benchmark: str, data: Path, thinking: bool = False) -> dict:
    """The real preprocessing stage, without Ray, on the first sample of `data`."""
    from evals.registry import get_benchmark
    from pipelines.stages import PreprocessStage, input_row

    stage = PreprocessStage(str(_tiny()), flavor, max_new_tokens=4, pack_rows=4, pack_tokens=1 << 20,
                            thinking={benchmark: thinking})
    sample = next(iter(get_benchmark(benchmark).load(data)))
    return stage.prepare(input_row(sample))


def _mvbench(root: Path, frames: int) -> Path:
    F.write_json(root / "json" / "object_existence.json", [
        {"video": "v1.mp4", "question": "Is there a cube?", "candidates": ["yes", "no"], "answer": "yes"}])
    write_video(root / "video" / "clevrer" / "video_validation" / "v1.mp4", frames=frames)
    return root


def test_short_clip_frames_follow_the_flavor(tmp_path):
    """The frames each flavor's harness takes from short clips, by their own formulas: VLMEvalKit Video-MME
    `int(i * len / (nframe + 1))`, VLMEvalKit/MVBench `get_index` segment midpoints (max_frame = len - 1), lmms-eval
    `read_video` (min(len, n) frames on np.linspace)."""
    vme = _videomme(tmp_path / "videomme", frames=10)
    mvb = _mvbench(tmp_path / "mvbench", frames=10)
    step = 10 / (32 + 1)
    seg = (10 - 1) / 16
    expected = {
        ("vlmevalkit", "videomme", vme): [int(i * step) for i in range(1, 33)],
        ("vlmevalkit", "mvbench", mvb): [int(seg / 2 + np.round(seg * i)) for i in range(16)],
        ("lmms-eval", "mvbench", mvb): np.linspace(0, 9, min(10, 16), dtype=int).tolist(),
        ("official", "mvbench", mvb): list(range(10)),
    }
    for (flavor, name, data), want in expected.items():
        item = _prepare(flavor, name, data)
        assert item["frame_indices"] == want, (flavor, name)
        assert item["inputs"] is not None or item["error"].startswith("prompt_too_long"), item["error"]
    assert len(set(expected[("vlmevalkit", "videomme", vme)])) == 10  # repeats: every frame, 32 samples


def test_which_rows_reason(tmp_path):
    """A thinking benchmark's prompt ends with <think>; VLMEvalKit's MVBench prompt ends in the assistant prefill
    'Best option:(' and opens no reasoning block, so its row is not split."""
    mvb = _mvbench(tmp_path / "mvbench", frames=20)
    plain, prefill = _prepare("official", "mvbench", mvb, thinking=True), _prepare("vlmevalkit", "mvbench", mvb, True)
    assert plain["error"] is None and plain["thinking"] is True
    assert prefill["error"] is None and prefill["thinking"] is False
    off = _prepare("official", "mvbench", mvb, thinking=False)
    tok = _tokenizer(_tiny())
    assert tok.decode(plain["inputs"].input_ids.tolist()).endswith("\nAssistant: <think>")
    assert off["thinking"] is False
    assert tok.decode(off["inputs"].input_ids.tolist()).endswith("\nAssistant: <think>\n\n</think>\n\n")


def _tiny():
    from ernie_vl.tiny import default_model_path

    return default_model_path()
