"""Rescoring a finished run from its saved predictions, and the report."""

import math
import os
import re
import xml.etree.ElementTree as ET

import pandas as pd
import pyarrow.parquet as pq
import pytest

from evals.registry import get_benchmark
from evals.report import write_report
from evals.sample import Media, Sample
from evals.scoring import read_predictions, rescore

DEMO_ANSWERS = {  # the first 10 packaged demo questions, answered right in the ways models write; count-001 fails
    "colour-000": "C. blue", "colour_short-000": "Yellow", "count-000": "two", "position-000": "A",
    "shape-000": "A triangle.", "presence-000": "No", "direction-000": "D", "colour-001": "D. yellow",
    "colour_short-001": "blue",
}


def write_run(out_dir, rows, name="part-00000.parquet"):
    """Predictions as the pipeline saves them: record columns + prediction/extracted/score/error."""
    folder = out_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / name, index=False)


def demo_rows():
    rows = []
    for s in get_benchmark("demo").load(None, 10):
        row = s.to_record()
        failed = s.sample_id not in DEMO_ANSWERS
        row.update(prediction=None if failed else DEMO_ANSWERS[s.sample_id], extracted=None,
                   score=float("nan"), error="decode failed: frame 3" if failed else None)
        rows.append(row)
    return rows


def video_rows():
    rows = []
    for i, (duration, pred) in enumerate([("short", "A"), ("long", "B"), ("long", "A")]):
        s = Sample(sample_id=f"00{i}-1", benchmark="videomme", split="test", question="Q?",
                   options={"A": "a", "B": "b", "C": "c", "D": "d"}, targets=["A"], category="Knowledge",
                   group=f"vid{i}", meta={"duration": duration, "task_type": "OCR Problems"},
                   media=[Media(kind="video", path=f"/v/{i}.mp4")])
        rows.append(dict(s.to_record(), prediction=pred, extracted=None, score=None, error=None))
    return rows


def values(metrics, name, category=None, flavor=None):
    return [m["value"] for m in metrics if m["metric"] == name and m["category"] == category
            and (flavor is None or m["flavor"] == flavor)]


def test_rescore_writes_metrics_for_each_flavor(tmp_path):
    write_run(tmp_path, demo_rows() + video_rows())
    official = rescore(tmp_path, "official")
    assert values(official, "accuracy", None)[0] == pytest.approx(90.0)  # demo: 9/10, the error row fails
    assert values(official, "errors")[0] == 1
    assert values(official, "accuracy_by_duration", "long") == [50.0]
    table = pq.read_table(tmp_path / "metrics.parquet")
    from evals.aggregate import METRIC_NAMES

    assert table.column_names[:6] == ["benchmark", "flavor", "metric", "category", "value", "n"]
    assert table.column_names == METRIC_NAMES  # then the uncertainty columns (evals.bootstrap)
    rescore(tmp_path, "vlmevalkit")
    frame = pd.read_parquet(tmp_path / "metrics.parquet")
    assert set(frame["flavor"]) == {"official", "vlmevalkit"} and set(frame["benchmark"]) == {"demo", "videomme"}
    again = rescore(tmp_path, "official")  # replaces, does not duplicate, the official rows
    assert len(pd.read_parquet(tmp_path / "metrics.parquet").query("flavor == 'official'")) == len(again)


def test_rescore_keeps_the_last_copy_of_a_resumed_sample(tmp_path):
    rows = video_rows()
    write_run(tmp_path, rows, "part-00000.parquet")
    write_run(tmp_path, [dict(rows[1], prediction="A")], "part-00001.parquet")
    assert len(read_predictions(tmp_path)) == 3
    assert values(rescore(tmp_path, "lmms-eval"), "accuracy")[0] == pytest.approx(100.0)


def test_rescore_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions"):
        rescore(tmp_path, "official")
    write_run(tmp_path, [{"sample_id": "1", "benchmark": "demo", "prediction": "A"}])
    with pytest.raises(ValueError, match="missing column"):
        rescore(tmp_path, "official")
    with pytest.raises(ValueError, match="flavor"):
        rescore(tmp_path, "lmms")


def test_report_is_self_contained_and_returns_tables(tmp_path, capsys):
    write_run(tmp_path, demo_rows() + video_rows())
    report = write_report(tmp_path)  # computes official metrics when metrics.parquet is absent
    assert os.fspath(report) == str(tmp_path / "report.html") and report.text_path.is_file()
    assert "Per-benchmark results" in report.text and "demo" in report.text and "videomme" in report.text
    assert "decode failed: frame 3" in report.text
    assert "Per-benchmark results" in capsys.readouterr().out
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") >= 3 and "<link" not in html
    assert "Accuracy by video length" in html and "Error counts" in html
    assert all(url == "http://www.w3.org/2000/svg" for url in
               [part.split('"')[0] for part in html.split('xmlns="')[1:]])
    # no external asset: the one script file is the sample browser's index, next to the page
    assert "https://" not in html and re.findall(r'src="([^"]*)"', html) == ["report_files/index.js"]
    assert (tmp_path / "report_files" / "index.js").is_file()
    for chunk in html.split("<svg")[1:]:  # every chart is well-formed XML
        ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")


def test_report_escapes_user_text(tmp_path):
    rows = demo_rows()
    rows[0]["error"] = "<img src=x onerror=alert(1)>"
    write_run(tmp_path, rows)
    rescore(tmp_path, "official")
    html = open(write_report(tmp_path, print_tables=False)).read()
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_scores_are_plain_floats(tmp_path):
    write_run(tmp_path, demo_rows())
    for m in rescore(tmp_path, "official"):
        assert m["value"] is None or (isinstance(m["value"], float) and not math.isnan(m["value"]))
        assert isinstance(m["n"], int)


def test_every_benchmark_end_to_end(tmp_path):
    """load → build_messages (3 flavors) → score → saved predictions → rescore (3 flavors) → report."""
    try:
        from evals_fixtures.datasets import build_all
    except ImportError:  # tests/ imported as a package
        from tests.evals_fixtures.datasets import build_all
    from evals.registry import list_benchmarks

    paths = build_all(tmp_path / "data")
    assert set(paths) == set(list_benchmarks())
    rows = []
    for name, path in paths.items():
        bench = get_benchmark(name)
        samples = list(bench.load(path))
        assert samples, name
        for s in samples:
            row = s.to_record()
            if s.error is None:
                for flavor in ("official", "lmms-eval", "vlmevalkit"):
                    messages = bench.build_messages(s, flavor)
                    parts = [p for m in messages for p in m["content"]]
                    assert sum(p["type"] in ("image", "video") for p in parts) == len(s.media), name
                    assert parts and all(p["type"] in ("image", "video", "text") for p in parts)
                prediction = s.targets[0]
                row.update(prediction=prediction, error=None, **dict(zip(("extracted", "score"),
                                                                          bench.score(row, prediction, "official"))))
            else:
                row.update(prediction=None, extracted=None, score=None, error=s.error)
            rows.append(row)
    assert sum(r["error"] is not None for r in rows) == 3  # mmbench, chartqa and videomme have a broken row
    write_run(tmp_path / "run", rows)
    for flavor in ("official", "lmms-eval", "vlmevalkit"):
        metrics = rescore(tmp_path / "run", flavor)
        assert {m["benchmark"] for m in metrics} == set(paths), flavor
    frame = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    assert len(frame.groupby(["benchmark", "flavor"])) == 3 * len(paths)
    report = write_report(tmp_path / "run", print_tables=False)
    for name in paths:
        assert name in report.text


def scored(rows, flavor):
    """Rows as the pipeline saves them: scored by their benchmark for ``flavor``, which they record."""
    out = []
    for row in rows:
        row = dict(row, flavor=flavor)
        if row["error"] is None:
            row["extracted"], row["score"] = get_benchmark(row["benchmark"]).score(row, row["prediction"], flavor)
        out.append(row)
    return out


def test_saved_scores_and_rescore_give_the_same_table(tmp_path):
    """The pipeline's path (compute_metrics + write_metrics: saved scores, per recorded flavor) and `ernie-vl score`
    (rescore) write identical metrics.parquet files for the same predictions."""
    from evals.scoring import compute_metrics, write_metrics

    for flavor in ("official", "vlmevalkit"):
        run, again = tmp_path / flavor / "run", tmp_path / flavor / "again"
        write_run(run, scored(demo_rows() + video_rows(), flavor))
        write_run(again, scored(demo_rows() + video_rows(), flavor))
        metrics = compute_metrics(run)
        write_metrics(run, metrics)
        assert rescore(again, flavor) == metrics
        assert pq.read_table(run / "metrics.parquet").equals(pq.read_table(again / "metrics.parquet"))
        assert {m["flavor"] for m in metrics} == {flavor}


def test_compute_metrics_uses_each_rows_flavor_and_saved_scores(tmp_path):
    from evals.scoring import compute_metrics, write_metrics

    rows = scored(demo_rows(), "official") + scored(video_rows(), "lmms-eval")
    rows[0] = dict(rows[0], score=0.0)  # a saved score is aggregated as saved, not recomputed
    write_run(tmp_path, rows)
    metrics = compute_metrics(tmp_path)
    assert {(m["benchmark"], m["flavor"]) for m in metrics} == {("demo", "official"), ("videomme", "lmms-eval")}
    assert values(metrics, "accuracy", None, "official")[0] == pytest.approx(80.0)  # 8/10: one error, one zeroed
    assert compute_metrics(tmp_path / "empty") == []  # nothing written yet: no rows, no error
    write_metrics(tmp_path, metrics)
    rescore(tmp_path, "vlmevalkit")  # adds a flavor, keeps the others
    write_metrics(tmp_path, metrics)  # the whole table: the pipeline's rows only
    assert set(pd.read_parquet(tmp_path / "metrics.parquet")["flavor"]) == {"official", "lmms-eval"}


def test_metric_rows_have_the_metrics_table_columns():
    from evals.aggregate import METRIC_NAMES, METRICS_SCHEMA, metric_row, metrics_table

    row = metric_row("demo", "official", "accuracy", None, 50, 4)
    assert list(row) == METRIC_NAMES == METRICS_SCHEMA.names
    assert metrics_table([row]).to_pylist() == [row] and metrics_table([]).schema == METRICS_SCHEMA
