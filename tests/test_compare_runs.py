"""`ernie-vl compare` on real runs: the packaged demo evaluated by the pipeline (local Ray, real checkpoints, Parquet)
with the embedded random checkpoint, a second random one (`ernie-vl make-tiny --seed 1`) and a crafted checkpoint
that answers "B" to every prompt (`scripted_model`; the random ones answer next to nothing right, so flips between
them alone would prove little). Expected values are computed from the runs' prediction files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import ray  # noqa: F401 - part of the test extra: a missing one must fail, not skip

from ernie_vl_cli import main as ernie_vl
from evals.compare import mcnemar_exact

pytestmark = pytest.mark.ray

try:
    from scripted_model import make_scripted
except ImportError:  # tests/ imported as a package
    from tests.scripted_model import make_scripted

LIMIT = 40
REQUIRED = ("benchmark", "flavor", "metric", "category", "run_a", "run_b", "value_a", "value_b", "diff", "ci_low",
            "ci_high", "p_value", "n", "flips_to_right", "flips_to_wrong")


@pytest.fixture(scope="module")
def ray_session():
    started = not ray.is_initialized()
    if started:
        from ernie_vl.worker_env import worker_env

        # address="local": a Ray instance of this test's own, even while another one on the machine has written
        # /tmp/ray/ray_current_cluster (ray.init() would join that one)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": worker_env()})
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    assert ernie_vl(["make-tiny", str(root / "seed1"), "--seed", "1"]) == 0
    says_b = make_scripted(root / "says-b", "B", start="\n")  # a prompt's last token is "\n" (after "</think>\n\n")
    out = {}
    from ernie_vl.tiny import default_model_path

    # the embedded random checkpoint named explicitly: without --model the command line uses the demo checkpoint
    for name, model in (("random", default_model_path()), ("seed1", root / "seed1"), ("says-b", says_b)):
        out[name] = root / name
        flags = ["--model", str(model)]
        assert ernie_vl(["eval", "--benchmark", "demo", "--limit", str(LIMIT), "--max-new-tokens", "4", "--quiet",
                         "--out", str(out[name]), *flags]) == 0
    return out


def predictions(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "predictions").set_index("sample_id")


def test_compare_three_runs(runs, tmp_path, capsys):
    dest = tmp_path / "cmp"
    names = [str(runs[n]) for n in ("random", "seed1", "says-b")]
    assert ernie_vl(["compare", *names, "--out", str(dest), "--no-media"]) == 0
    printed = capsys.readouterr().out
    table = pq.read_table(dest / "compare.parquet").to_pandas()
    flips = pq.read_table(dest / "flips.parquet").to_pandas()
    assert set(REQUIRED) <= set(table.columns)
    assert set(zip(table["run_a"], table["run_b"])) == {(names[0], names[1]), (names[0], names[2]),
                                                         (names[1], names[2])}
    for a, b in ((0, 1), (0, 2), (1, 2)):
        pa_, pb_ = predictions(runs[Path(names[a]).name]), predictions(runs[Path(names[b]).name])
        assert len(pa_) == len(pb_) == LIMIT
        right_a, right_b = set(pa_.index[pa_["score"] >= 1]), set(pb_.index[pb_["score"] >= 1])
        to_right, to_wrong = right_b - right_a, right_a - right_b
        pair = table[(table["run_a"] == names[a]) & (table["run_b"] == names[b])]
        overall = pair[(pair["metric"] == "accuracy") & pair["category"].isna()].iloc[0]
        assert overall["value_a"] == pytest.approx(100 * len(right_a) / LIMIT)
        assert overall["value_b"] == pytest.approx(100 * len(right_b) / LIMIT)
        assert overall["n"] == LIMIT and overall["test"] == "mcnemar_exact"
        assert (overall["flips_to_right"], overall["flips_to_wrong"]) == (len(to_right), len(to_wrong))
        assert overall["p_value"] == pytest.approx(mcnemar_exact(len(to_wrong), len(to_right)))
        listed = flips[(flips["run_a"] == names[a]) & (flips["run_b"] == names[b])]
        assert set(listed.loc[listed["flip"] == "to_right", "sample_id"]) == to_right
        assert set(listed.loc[listed["flip"] == "to_wrong", "sample_id"]) == to_wrong
        for cat, members in pa_.groupby("category"):
            row = pair[(pair["metric"] == "accuracy") & (pair["category"] == cat)].iloc[0]
            assert row["n"] == len(members)
            assert row["flips_to_right"] == len(to_right & set(members.index))
    # the model that always says "B" is right on the questions whose answer is B, the random one on next to none
    says_b = predictions(runs["says-b"])
    assert (says_b["prediction"] == "B").all()
    answer_b = set(says_b.index[says_b["target"] == "B"])
    assert answer_b and set(says_b.index[says_b["score"] >= 1]) == answer_b
    pair = table[(table["run_a"] == names[0]) & (table["run_b"] == names[2])]
    overall = pair[(pair["metric"] == "accuracy") & pair["category"].isna()].iloc[0]
    assert overall["flips_to_right"] >= 1 and overall["ci_high"] >= overall["diff"] >= overall["ci_low"]
    assert f"{names[0]} -> {names[2]}" in printed and "flipped samples" in printed


def test_compare_refuses_runs_asked_other_inputs(runs, tmp_path, capsys):
    """Another prompt version in the manifest: refused, naming the part; other questions in the predictions: refused,
    naming the sample. A difference in what is compared (the checkpoint, generation settings) is not refused."""
    base = runs["says-b"]
    other = tmp_path / "other-version"
    shutil.copytree(base, other)
    manifest = json.loads((other / "manifest.json").read_text())
    parts = manifest["benchmarks"]["demo"]["fingerprint_parts"]
    parts["benchmark_version"] = "demo/999"
    parts["video_sampling"] = {"num_frames": 2}
    (other / "manifest.json").write_text(json.dumps(manifest))
    rc = ernie_vl(["compare", str(runs["random"]), str(other), "--out", str(tmp_path / "no")])
    err = capsys.readouterr().err
    assert rc == 2 and "refusing to compare" in err and f"demo: {runs['random']} vs {other}" in err
    assert "benchmark_version: " in err and "-> 'demo/999'" in err and "video_sampling.num_frames" in err
    assert not (tmp_path / "no" / "compare.parquet").exists()

    questions = tmp_path / "other-questions"
    shutil.copytree(base, questions)
    (questions / "manifest.json").unlink()  # predictions from elsewhere: fingerprints not checked, samples are
    part = sorted((questions / "predictions").glob("*.parquet"))[0]
    df = pd.read_parquet(part)
    first = df["sample_id"].iloc[0]
    df.loc[df.index[0], "question"] = "Something else?"
    df.to_parquet(part)
    rc = ernie_vl(["compare", str(runs["random"]), str(questions), "--out", str(tmp_path / "no2")])
    err = capsys.readouterr().err
    assert rc == 2 and "other inputs" in err and repr(first) in err

    # the checkpoint and the generation differ between these runs' fingerprints, and that is what is compared
    m_a = json.loads((runs["random"] / "manifest.json").read_text())["benchmarks"]["demo"]["fingerprint_parts"]
    m_b = json.loads((base / "manifest.json").read_text())["benchmarks"]["demo"]["fingerprint_parts"]
    assert m_a["checkpoint"] != m_b["checkpoint"]
