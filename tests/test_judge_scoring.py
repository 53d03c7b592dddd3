"""Judge scoring through the one scoring path (evals.scoring.score_rows / rescore / score_saved and `ernie-vl score`)
with a real HTTP judge whose replies are scripted, so every score can be checked against the benchmark's reading of
the reply: predictions gain the judge's scores and a `judge` column, replies land in the Parquet cache, a rescore with
the judge gone asks nothing and gives the same scores, a rescore without a judge goes back to the rules."""

import json

import pandas as pd
import pytest
from evals_fixtures.datasets import build_all
from judge_support import ScriptedJudge, dead_url

from evals.judge import Judge
from evals.judge_client import JudgeSettings
from evals.registry import get_benchmark
from evals.scoring import rescore, score_saved

PREDICTIONS = {  # sample id -> the model's answer; every one needs the judge in the official flavor
    ("mathvista", "1"): "I would say the first option.",
    ("mathvista", "2"): "There are three squares.",
    ("mmvet", "v1_0"): "It is crimson.",
    ("charxiv", "0"): "The blue curve.",
}


def reply_for(prompt: str) -> str:
    """What a sensible judge would answer to each benchmark's prompt (matched on the prompt's own text)."""
    if "Extracted answer" in prompt:  # MathVista extraction
        return "A" if "first option" in prompt else "3"
    if "Correctness" in prompt:  # MM-Vet
        return "0.8"
    return '```json\n{"extracted_answer": "blue", "score": 1}\n```'  # CharXiv


@pytest.fixture
def run(tmp_path):
    paths = build_all(tmp_path / "data")
    rows = []
    for name in ("mathvista", "mmvet", "charxiv"):
        for sample in get_benchmark(name).load(paths[name]):
            prediction = PREDICTIONS[name, sample.sample_id]
            extracted, score = get_benchmark(name).score(sample.to_record(), prediction, "official")
            rows.append(dict(sample.to_record(), prediction=prediction, extracted=extracted, score=score,
                             error=None, flavor="official"))
    out = tmp_path / "run"
    (out / "predictions").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(out / "predictions" / "part-0.parquet", index=False)
    return out


def saved(out) -> pd.DataFrame:
    return pd.read_parquet(out / "predictions").set_index("sample_id")


def values(metrics, name, metric):
    [value] = [m["value"] for m in metrics if m["benchmark"] == name and m["metric"] == metric
               and m["category"] is None]
    return value


def test_rescore_with_a_judge_then_from_the_cache_then_by_rule(run):
    before = rescore(run, "official")  # no judge: MathVista's rules cannot parse these answers, the others need one
    assert values(before, "mathvista", "accuracy") == 0.0 and values(before, "mmvet", "judge_score") is None
    assert set(saved(run)["judge"]) == {"rule"}

    with ScriptedJudge(reply_for) as server:
        judge = Judge(JudgeSettings(url=server.url, model="judge-m", concurrency=2), run)
        metrics = rescore(run, "official", judge)
    assert len(server.requests) == 4 and {r["body"]["model"] for r in server.requests} == {"judge-m"}
    assert {r["body"]["max_tokens"] for r in server.requests} == {256, 128}  # MathVista/CharXiv 256, MM-Vet 128
    assert values(metrics, "mathvista", "accuracy") == 100.0  # "A" → red (right), "3" → 3 (right)
    assert values(metrics, "mmvet", "judge_score") == pytest.approx(80.0)
    assert values(metrics, "charxiv", "accuracy") == 100.0 and values(metrics, "charxiv", "unjudged") == 0
    df = saved(run)
    assert set(df["judge"]) == {"judge-m"} and df.loc["1", "extracted"] == "red" and df.loc["2", "extracted"] == "3"
    assert df.loc["v1_0", "score"] == pytest.approx(0.8) and df.loc["0", "extracted"] == "blue"
    assert df.loc["1", "prediction"] == PREDICTIONS["mathvista", "1"]  # the model's answer is never touched
    assert judge.record("mathvista") == {"judge_model": "judge-m", "judge_url": server.url, "asked": 2, "cached": 0,
                                         "failed": 0, "rows_judged": 2, "rows_rule": 0}
    table = pd.read_parquet(run / "metrics.parquet")

    again = Judge(JudgeSettings(url=dead_url(), model="judge-m"), run)  # the judge is stopped
    assert rescore(run, "official", again) == metrics and again.client.attempts == 0
    assert again.record("charxiv")["cached"] == 1 and again.record("charxiv")["asked"] == 0
    assert pd.read_parquet(run / "metrics.parquet").equals(table)
    assert saved(run)[["extracted", "score", "judge"]].equals(df[["extracted", "score", "judge"]])

    assert rescore(run, "official") == before  # without a judge: the rules again, nothing lost
    assert set(saved(run)["judge"]) == {"rule"}


def test_another_flavor_changes_metrics_only_and_a_dead_judge_falls_back_to_rules(run):
    with ScriptedJudge(reply_for) as server:
        metrics = rescore(run, "vlmevalkit", Judge(JudgeSettings(url=server.url, model="judge-m"), run))
    assert values(metrics, "mathvista", "accuracy") == 100.0
    assert len(server.requests) == 4 and "Model respone:" in server.prompts()[0] + server.prompts()[1]
    assert "judge" not in saved(run).columns  # the rows were saved for official: their file is left as it was
    dead = Judge(JudgeSettings(url=dead_url(), model="other", max_retries=1, backoff_s=0.01, concurrency=1), run)
    metrics = rescore(run, "official", dead)
    rec = dead.record("mathvista")
    assert rec["failed"] == 2 and rec["asked"] == 0 and rec["rows_rule"] == 2 and "error" in rec
    assert values(metrics, "mathvista", "accuracy") == 0.0 and values(metrics, "mmvet", "judge_score") is None
    assert dead.client.attempts == 2  # given up after the first prompt's retries, not once per prompt (4 prompts)


def test_score_saved_scores_each_row_for_its_own_flavor(run):
    df = pd.read_parquet(run / "predictions" / "part-0.parquet")
    df.loc[df["benchmark"] == "mathvista", "flavor"] = "lmms-eval"
    df.to_parquet(run / "predictions" / "part-0.parquet", index=False)
    with ScriptedJudge(reply_for) as server:
        judge = Judge(JudgeSettings(url=server.url, model="judge-m"), run)
        assert score_saved(run, ["mathvista", "mmvet", "demo"], judge) == 3  # charxiv not asked for
    assert len(server.requests) == 3
    out = saved(run)
    assert out.loc["1", "judge"] == "judge-m" and out.loc["v1_0", "judge"] == "judge-m"
    assert pd.isna(out.loc["0", "judge"])  # charxiv untouched


def test_ernie_vl_score_cli_records_the_scoring_in_the_manifest(run, capsys):
    from pipelines.cli import main

    (run / "manifest.json").write_text(json.dumps({"benchmarks": {"mathvista": {"name": "mathvista"}}}))
    with ScriptedJudge(reply_for) as server:
        assert main(["score", str(run), "--judge-url", server.url, "--judge-model", "judge-m"]) == 0
    assert "mathvista: judge judge-m: 2 asked, 0 from the cache, 0 failed" in capsys.readouterr().out
    scoring = json.loads((run / "manifest.json").read_text())["benchmarks"]["mathvista"]["scoring"]
    assert scoring["method"] == "judge" and scoring["flavor"] == "official" and scoring["asked"] == 2
    assert scoring["judge_url"] == server.url and "key" not in json.dumps(scoring).lower()
    assert main(["score", str(run), "--judge-url", dead_url(), "--judge-model", "judge-m"]) == 0
    scoring = json.loads((run / "manifest.json").read_text())["benchmarks"]["mathvista"]["scoring"]
    assert (scoring["asked"], scoring["cached"], scoring["failed"]) == (0, 2, 0)
    assert main(["score", str(run), "--judge-url", dead_url(), "--judge-model", "new-judge", "--judge-retries",
                 "0"]) == 1
    assert "did not answer 4 prompt(s)" in capsys.readouterr().err
    assert main(["score", str(run), "--judge-model", "judge-m"]) == 2  # --judge-url missing
