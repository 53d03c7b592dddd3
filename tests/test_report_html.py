"""report.html and compare.html opened in headless Chromium from the file system: the sample rows are there, the
filters and the pager change what is shown (driven as a user does: a select's change event, a button's click, or a
link with the filters in its fragment), thumbnails load, and the page logs no script or console error and no failed
load. A 10,000-row run pages through all its rows. The last test shows the checks fail on a broken page."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from browser_support import Browser

from evals.aggregate import metric_row, metrics_table
from evals.html import render_compare
from evals.registry import get_benchmark
from evals.report import write_report
from evals.sample import Sample
from evals.scoring import rescore
from evals.svg import Bar, bar_chart, diff_chart
from pipelines.report_media import media_hook
from pipelines.schema import predictions_table

pytestmark = pytest.mark.subprocess  # starts a Chromium process

WRONG = "zzz"  # no benchmark reads an answer out of it
XSS = '<img src=x onerror="window.__pwned = 1">'
STATE = "document.getElementById('browser').dataset"


def demo_run(out, right: set[str], error_id: str | None = None, reasoning_id: str | None = None):
    """A finished run of the packaged demo benchmark as the pipeline leaves it (predictions, manifest.json, metrics),
    right on the samples in ``right`` and wrong on the others; two videomme rows whose data folder is unknown."""
    rows = []
    for s in demo_samples():
        row = dict(s.to_record(), flavor="official", media_items=len(s.media), finish_reason="stop", model="tiny")
        row["prediction"] = s.targets[0] if s.sample_id in right else WRONG
        if s.sample_id == error_id:
            row.update(prediction=None, error="media: VideoError: cannot decode frame 3")
        else:
            row["extracted"], row["score"] = get_benchmark("demo").score(row, row["prediction"], "official")
        if s.sample_id == reasoning_id:
            row["reasoning"] = "First I look at the picture.\nThen I answer."
        if any(m.kind == "video" for m in s.media):
            row.update(frame_indices=[0, 2, 4, 6], frame_timestamps=[0.0, 0.5, 1.0, 1.5])
        rows.append(row)
    for i in range(2):
        s = Sample(sample_id=f"q{i}", benchmark="videomme", split="test", question=XSS if i else "Which?",
                   options={"A": "a", "B": "b"}, targets=["A"], category="Knowledge")
        rows.append(dict(s.to_record(), prediction="A", extracted="A", score=1.0, flavor="official", media_items=1))
    (out / "predictions").mkdir(parents=True)
    pq.write_table(predictions_table(rows), out / "predictions" / "part-demo.parquet")
    manifest = {"benchmarks": {"demo": {"name": "demo", "data": None, "status": "complete", "rows": 10, "done": 9,
                                        "failed": 1, "progress": {"samples_per_s": 2.5, "generated_tokens_per_s": 80.0,
                                                                  "elapsed_s": 4.0}}},
                "last_run": {"config": {"model": "/ckpt/ERNIE-tiny", "flavor": "official", "max_new_tokens": 32},
                             "dtype": "float32", "resources": {"device": "cpu"}}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    rescore(out, "official")
    return rows


def demo_samples():
    """The packaged demo samples, the first two of each category (images, several images, videos)."""
    out, seen = [], {}
    for s in get_benchmark("demo").load():
        seen[s.category] = seen.get(s.category, 0) + 1
        if seen[s.category] <= 2:
            out.append(s)
    assert {"video", "multi-image"} <= set(seen), seen
    return out


def demo_ids():
    return [s.sample_id for s in demo_samples()]


def ready(b: Browser) -> dict:
    b.wait(f"{STATE}.state === 'ready' || {STATE}.state === 'error'", "the sample browser")
    return b.js(f"Object.assign({{}}, {STATE}, {{ids: Array.from(document.querySelectorAll('article.row'))"
                f".map(a => a.dataset.id)}})")


def choose(b: Browser, name: str, value: str) -> dict:
    """Pick ``value`` in the filter ``name`` as a user does, and wait for the page to show it."""
    b.js(f"(() => {{ const s = document.querySelector('#filters [name={name}]'); s.value = {json.dumps(value)};"
         f" if (s.value !== {json.dumps(value)}) throw new Error('no option ' + {json.dumps(value)});"
         f" {STATE}.state = 'changing'; s.dispatchEvent(new Event('change', {{bubbles: true}})); }})()")
    return ready(b)


def click(b: Browser, button: str) -> dict:
    b.js(f"{STATE}.state = 'changing'; document.querySelector('#pager-top button[name={button}]').click()")
    return ready(b)


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def test_report_page(tmp_path, browser):
    ids = demo_ids()
    right = set(ids[::2])
    demo = demo_samples()
    videos = [s for s in demo if any(m.kind == "video" for m in s.media)]
    failed = videos[0].sample_id
    rows = demo_run(tmp_path, right, error_id=failed, reasoning_id=ids[0])
    write_report(tmp_path, print_tables=False, media=media_hook(tmp_path))
    html = (tmp_path / "report.html").read_text()
    assert "/ckpt/ERNIE-tiny" in html and "2.5" in html  # settings and throughput from the manifest
    b = browser
    b.open(tmp_path / "report.html")
    page = ready(b)
    assert page["state"] == "ready" and sorted(page["ids"]) == sorted(ids + ["q0", "q1"]), page
    # every image and video-frame thumbnail of the page loads (eagerly here; the page loads them lazily)
    loaded = b.js("Promise.all(Array.from(document.querySelectorAll('#rows img')).map(i => { i.loading = 'eager';"
                  " return i.decode().then(() => i.naturalWidth); }))")
    assert len(loaded) == sum(m.kind == "image" for s in demo for m in s.media) + 4 * len(videos)
    assert all(w > 0 for w in loaded)
    captions = b.js(f"Array.from(document.querySelectorAll(`article[data-id='{videos[1].sample_id}'] figcaption`))"
                    ".map(f => f.textContent)")
    assert captions == ["0.0 s", "0.5 s", "1.0 s", "1.5 s"]
    assert b.js("document.querySelector(`article[data-id='q0'] .missing`).textContent").startswith("media not shown")
    card = b.js(f"document.querySelector(`article[data-id='{ids[0]}']`).innerText")
    assert "reasoning (" in card and "First I look" in b.js(f"document.querySelector(`article[data-id='{ids[0]}'] "
                                                            "details pre`).textContent")
    # user text is shown as text, never run
    assert b.js("window.__pwned === undefined") and XSS in b.js("document.querySelector(`article[data-id='q1']`)"
                                                                ".innerText")
    # filters: status, category, benchmark, then a link with the filters in its fragment
    wrong = sorted(set(ids) - right - {failed})
    assert sorted(choose(b, "status", "wrong")["ids"]) == wrong
    assert sorted(choose(b, "status", "correct")["ids"]) == sorted((right - {failed}) | {"q0", "q1"})
    assert choose(b, "status", "error")["ids"] == [failed]
    assert b.js(f"document.querySelector(`article[data-id='{failed}'] dd.err`).textContent").startswith("media:")
    choose(b, "status", "")
    shown = choose(b, "category", "video")["ids"]
    assert sorted(shown) == sorted(s.sample_id for s in videos)
    assert sorted(choose(b, "benchmark", "videomme")["ids"]) == ["q0", "q1"]  # and the category filter is reset
    b.open(tmp_path / "report.html", "benchmark=demo&status=wrong")
    assert sorted(ready(b)["ids"]) == wrong
    assert b.errors() == []
    assert len(rows) == len(demo) + 2


def test_report_pages_through_10000_rows(tmp_path, browser):
    rows = []
    for i in range(10_000):
        bench = ("mmbench", "pope", "textvqa")[i % 3]
        s = Sample(sample_id=str(i), benchmark=bench, split="test", question=f"Question {i}?",
                   options={"A": "x", "B": "y"} if bench == "mmbench" else {}, targets=["A"], category=f"c{i % 4}")
        score = 1.0 if i % 5 else 0.0
        error = "generation: RuntimeError: boom" if i % 97 == 0 else None
        rows.append(dict(s.to_record(), prediction=None if error else "A", extracted="A", error=error,
                         score=None if error else score, flavor="official"))
    (tmp_path / "predictions").mkdir()
    pq.write_table(predictions_table(rows), tmp_path / "predictions" / "part-0.parquet")
    # metrics as given (rescoring would change the scores this test chose); the page's rows are the point here
    pq.write_table(metrics_table([metric_row(b, "official", "accuracy", None, 80.0, 3333) for b in ("mmbench", "pope")]),
                   tmp_path / "metrics.parquet")
    write_report(tmp_path, print_tables=False)
    assert (tmp_path / "report.html").stat().st_size < 100_000  # the rows are beside it, loaded per page
    order = sorted(rows, key=lambda r: (r["benchmark"], int(r["sample_id"])))
    ids = [r["sample_id"] for r in order]
    b = browser
    b.open(tmp_path / "report.html")
    page = ready(b)
    assert (page["matching"], page["pages"], page["ids"]) == ("10000", "200", ids[:50])
    assert click(b, "next")["ids"] == ids[50:100]
    last = click(b, "last")
    assert (last["page"], last["ids"]) == ("200", ids[-50:])
    wrong = [r["sample_id"] for r in order if not r["error"] and r["score"] == 0]
    page = choose(b, "status", "wrong")
    assert (page["matching"], page["page"], page["ids"]) == (str(len(wrong)), "1", wrong[:50])
    pope_wrong = [r["sample_id"] for r in order if r["benchmark"] == "pope" and not r["error"] and r["score"] == 0]
    page = choose(b, "benchmark", "pope")
    assert (page["matching"], page["ids"]) == (str(len(pope_wrong)), pope_wrong[:50])
    page = choose(b, "size", "200")
    assert page["ids"] == pope_wrong[:200]
    b.open(tmp_path / "report.html", "status=error&page=2&size=25")
    errors = [r["sample_id"] for r in order if r["error"]]
    assert ready(b)["ids"] == errors[25:50]
    b.js(f"{STATE}.state = 'changing'; const q = document.querySelector('#filters [name=q]'); q.value = '9999';"
         " q.dispatchEvent(new Event('input'))")
    assert ready(b)["ids"] == []  # 9999 is no error row, and the status filter stays
    assert b.errors() == []


def compare_table(rows_a, rows_b) -> list[dict]:
    """A compare.parquet table as `ernie-vl compare` writes it (its schema), for the demo benchmark's accuracy."""
    def acc(rows):
        demo = [r for r in rows if r["benchmark"] == "demo"]
        return 100.0 * sum(r.get("score") or 0.0 for r in demo) / len(demo)
    a, b = acc(rows_a), acc(rows_b)
    base = {"benchmark": "demo", "flavor": "official", "metric": "accuracy", "run_a": "base", "run_b": "new", "n": 10}
    return [dict(base, category=None, value_a=a, value_b=b, diff=b - a, ci_low=b - a - 20, ci_high=b - a + 20,
                 p_value=0.5, flips_to_right=3, flips_to_wrong=1),
            dict(base, category="image", value_a=50.0, value_b=60.0, diff=10.0, ci_low=None, ci_high=None,
                 p_value=None, flips_to_right=1, flips_to_wrong=0)]


def test_compare_page(tmp_path, browser):
    ids = demo_ids()
    n = len(ids)
    right_a, right_b = set(ids[:n * 3 // 5]), set(ids[n // 5:n * 4 // 5])  # some flip each way, some stay right
    rows_a = demo_run(tmp_path / "a", right_a)
    rows_b = demo_run(tmp_path / "b", right_b, error_id=ids[-1])
    comparison = compare_table(rows_a, rows_b)
    path = render_compare(tmp_path / "cmp", comparison, rows_a, rows_b, runs=("runs/a", "runs/b"),
                          media=media_hook(tmp_path / "a", tmp_path / "b"))
    html = path.read_text()
    assert html.count('class="ci"') == 1  # a whisker where the table has an interval
    b = browser
    b.open(path)
    assert sorted(ready(b)["ids"]) == sorted(ids + ["q0", "q1"])
    assert sorted(choose(b, "flip", "to_right")["ids"]) == sorted(right_b - right_a)
    assert sorted(choose(b, "flip", "to_wrong")["ids"]) == sorted(right_a - right_b)
    assert sorted(choose(b, "flip", "both_right")["ids"]) == sorted((right_a & right_b) | {"q0", "q1"})
    choose(b, "flip", "")
    assert choose(b, "status_b", "error")["ids"] == [ids[-1]]
    sides = b.js(f"Array.from(document.querySelectorAll(`article[data-id='{ids[-1]}'] .side h4`)).map(h => h.textContent)")
    assert sides == ["base — wrong", "new — error"]
    assert b.errors() == []


def test_the_checks_fail_on_a_broken_page(tmp_path, browser):
    demo_run(tmp_path, set())
    write_report(tmp_path, print_tables=False)
    (tmp_path / "report_files" / "rows-00000.js").unlink()
    b = browser
    b.open(tmp_path / "report.html")
    assert ready(b)["state"] == "error"
    assert any("rows-00000.js" in e for e in b.errors())
    (tmp_path / "boom.html").write_text("<!DOCTYPE html><script>throw new Error('boom')</script>")
    b.open(tmp_path / "boom.html")
    assert any("boom" in e for e in b.errors())


def test_charts_draw_interval_whiskers_where_given():
    svg = bar_chart("t", [Bar("a", 50.0, 10, 40.0, 60.0), Bar("b", 30.0, 10)], max_value=100.0)
    # whisker from 40 % to 60 % of the 360 px bar area that starts at x = 260
    assert re.findall(r'class="ci" d="M([\d.]+) [\d.]+H([\d.]+)', svg) == [("404.0", "476.0")]
    assert "50.00 [40.00, 60.00] (n=10)" in svg and "30.00 (n=10)" in svg
    svg = diff_chart("d", [Bar("x", -5.0, 10, -15.0, 5.0)], notes=["p=0.3"])
    # symmetric scale of ±15 around x = 260 + 180: the interval spans 180 px * (−15..5)/15
    assert re.findall(r'class="ci" d="M([\d.]+) [\d.]+H([\d.]+)', svg) == [("260.0", "500.0")]
    assert "-5.00 [-15.00, +5.00] p=0.3" in svg
