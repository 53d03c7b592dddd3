"""The embedded demo checkpoint: its training script (a short run), and the shipped model answering the packaged
``demo`` benchmark through `ernie-vl eval` as a user runs it (real Ray, Parquet, no --model).

Expected values come from the benchmark's files: the chance level is a uniform guess among each question's possible
answers (options, yes/no, or its ``answer_space``), and accuracy is the share of predictions whose score is 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import ray  # noqa: F401 - part of the test extra: a missing one must fail, not skip

from ernie_vl_cli import main as ernie_vl

DEMO_DATA = Path(__file__).resolve().parents[1] / "evals" / "data" / "demo"


def test_short_training_run_learns_the_colour_questions(tmp_path):
    """The training script end to end on colour questions only: the loss falls, the checkpoint it writes loads and
    answers the benchmark's (held-out) colour questions; it knows nothing else."""
    import torch

    from ernie_vl.train import TrainSettings
    from ernie_vl_cli.train_demo import evaluate, train_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny shapes train fastest on one thread (as the shipped run did)
    try:
        out, losses = train_demo(tmp_path / "ckpt", TrainSettings(steps=200, warmup=20),
                                 counts={"colour": 150, "colour_short": 250}, log=None)
    finally:
        torch.set_num_threads(threads)
    assert len(losses) == 200
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first / 10, (first, last)
    res = evaluate(out)
    assert res["n"] == 200
    assert res["by_category"]["colour"] >= 0.8, res["by_category"]
    assert res["by_category"]["shape"] <= 0.5  # never trained on shapes


def test_demo_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from ernie_vl.demo_model import WEIGHTS, write_demo_checkpoint

    state = load_file(str(WEIGHTS))
    key = sorted(state)[0]
    del state[key]
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        write_demo_checkpoint(tmp_path / "ckpt", tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError, match="train_demo"):
        write_demo_checkpoint(tmp_path / "ckpt", tmp_path / "none.safetensors")


def _chance(record: dict) -> float:
    if record["type"] == "mcq":
        return 1 / len(record["options"])
    if record["type"] == "yesno":
        return 1 / 2
    return 1 / len(record["answer_space"])


@pytest.mark.ray
def test_ernie_vl_eval_demo_with_the_shipped_model_beats_chance(tmp_path):
    from ernie_vl.demo_model import demo_model_path

    records = [json.loads(line) for line in (DEMO_DATA / "samples.jsonl").read_text().splitlines()]
    chance = sum(_chance(r) for r in records) / len(records)
    assert len(records) == 200 and chance <= 0.3

    started = not ray.is_initialized()
    if started:
        from ernie_vl.worker_env import worker_env

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": worker_env()})
    try:
        assert ernie_vl(["eval", "--benchmark", "demo", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    finally:
        if started:
            ray.shutdown()
    df = pd.read_parquet(tmp_path / "out" / "predictions")
    assert len(df) == 200 and df["error"].isna().all()
    assert set(df["model"]) == {demo_model_path().name}  # no --model: the demo checkpoint
    accuracy = float((df["score"] >= 1).mean())
    assert accuracy >= 0.8, df.groupby("category")["score"].mean().to_dict()
    by_category = df.groupby("category")["score"].mean()
    assert by_category["colour"] >= 0.9 and by_category["video"] > 0.5
    metrics = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    overall = metrics[(metrics.metric == "accuracy") & metrics.category.isna()].iloc[0]
    assert overall["value"] == pytest.approx(100 * accuracy) and overall["n"] == 200
    assert 100 * chance < overall["ci_low"] <= overall["value"] <= overall["ci_high"] <= 100
