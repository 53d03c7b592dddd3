"""Report of a finished run: text tables and one self-contained HTML file.

Inputs in ``out_dir``: ``metrics.parquet`` (from the pipeline or :func:`evals.scoring.rescore`; computed
for the ``official`` flavor if absent) and ``predictions/*.parquet`` (for the error summary).
Outputs: ``report.txt`` and ``report.html`` (inline CSS and SVG, no scripts, no external assets) with

* a per-benchmark table (headline metric, errors, unparsed) for every flavor present,
* per-category tables (accuracy by category, and by any ``*_by_*`` grouping such as video duration),
* bar charts of accuracy by category and by video length, and of error counts,
* the most frequent error messages per benchmark.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path

import pyarrow.parquet as pq

from evals.aggregate import has_error
from evals.registry import list_benchmarks, get_benchmark
from evals.scoring import METRICS_FILE, read_predictions, rescore
from evals.svg import bar_chart

REPORT_HTML = "report.html"
REPORT_TXT = "report.txt"
_COUNT_METRICS = ("errors", "unparsed", "answered", "circular_groups")


@dataclass(frozen=True)
class Report:
    """Where the report was written, and its text tables. Usable as a path (``os.fspath``)."""

    path: Path
    text_path: Path
    text: str

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _primary(benchmark: str) -> str:
    return get_benchmark(benchmark).primary_metric if benchmark in list_benchmarks() else "accuracy"


def _load_metrics(out_dir: Path) -> list[dict]:
    path = out_dir / METRICS_FILE
    if not path.is_file():
        rescore(out_dir, "official")
    return pq.read_table(path).to_pylist()


def _error_messages(out_dir: Path) -> dict[str, Counter]:
    try:
        rows = read_predictions(out_dir)
    except (FileNotFoundError, ValueError):
        return {}
    out: dict[str, Counter] = {}
    for row in rows:
        if has_error(row):
            message = row["error"].splitlines()[0][:160]
            out.setdefault(row["benchmark"], Counter())[message] += 1
    return out


def build_tables(metrics: list[dict]) -> tuple[str, dict]:
    """The text of the per-benchmark and per-category tables, plus the grouped data the HTML uses."""
    benchmarks = sorted({m["benchmark"] for m in metrics})
    flavors = sorted({m["flavor"] for m in metrics})
    lookup = {(m["benchmark"], m["flavor"], m["metric"], m["category"]): m for m in metrics}
    summary = []
    for bench in benchmarks:
        primary = _primary(bench)
        for flavor in flavors:
            head = lookup.get((bench, flavor, primary, None))
            if head is None and not any(k[0] == bench and k[1] == flavor for k in lookup):
                continue
            errors = lookup.get((bench, flavor, "errors", None))
            unparsed = lookup.get((bench, flavor, "unparsed", None))
            summary.append([bench, flavor, primary, _fmt(head and head["value"]), str(head["n"] if head else "-"),
                            _fmt(errors and errors["value"]), _fmt(unparsed and unparsed["value"])])
    parts = ["Per-benchmark results", _table(["benchmark", "flavor", "metric", "value", "n", "errors", "unparsed"], summary)]
    grouped: dict[str, dict[str, list[dict]]] = {}
    for m in metrics:
        if m["category"] is None or m["metric"] in _COUNT_METRICS:
            continue
        grouped.setdefault(m["benchmark"], {}).setdefault(f"{m['metric']} [{m['flavor']}]", []).append(m)
    for bench in benchmarks:
        for title, rows in sorted(grouped.get(bench, {}).items()):
            parts.append(f"\n{bench}: {title}")
            parts.append(_table(["category", "value", "n"], [[str(r["category"]), _fmt(r["value"]), str(r["n"])]
                                                              for r in rows]))
    return "\n".join(parts) + "\n", {"summary": summary, "grouped": grouped, "lookup": lookup,
                                      "benchmarks": benchmarks, "flavors": flavors}


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 18px}
th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}
h2{margin-top:32px;border-bottom:1px solid #ddd}.note{color:#666;font-size:12px}svg{display:block;margin:8px 0}"""


def _html_table(headers, rows) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(data: dict, errors: dict[str, Counter], title: str) -> str:
    """The self-contained HTML page."""
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>",
           "<p class='note'>Values: percentages for accuracy-like metrics; MME sums category scores "
           "(max 2000 / 800); OCRBench counts hits (max 1000).</p>",
           _html_table(["benchmark", "flavor", "metric", "value", "n", "errors", "unparsed"], data["summary"])]
    lookup = data["lookup"]
    error_items = []
    for bench in data["benchmarks"]:
        for flavor in data["flavors"]:
            row = lookup.get((bench, flavor, "errors", None))
            if row is not None:
                error_items.append((f"{bench} [{flavor}]", row["value"], row["n"]))
    if error_items:
        out.append("<h2>Error counts</h2>" + bar_chart("Rows with an error (count)", error_items, colour="#C44E52"))
    for bench in data["benchmarks"]:
        out.append(f"<h2>{escape(bench)}</h2>")
        for title, rows in sorted(data["grouped"].get(bench, {}).items()):
            items = [(str(r["category"]), r["value"], r["n"]) for r in rows]
            is_pct = not any(t in title for t in ("score", "perception", "cognition"))
            heading = ("Accuracy by video length: " if "_by_duration" in title else "") + title
            out.append(bar_chart(heading, items, 100.0 if is_pct and all((v or 0) <= 100 for _, v, _ in items) else None))
            out.append(_html_table(["category", "value", "n"], [[c, _fmt(v), n] for c, v, n in items]))
        if errors.get(bench):
            out.append("<h3>Most frequent errors</h3>")
            out.append(_html_table(["error", "count"], [[m, c] for m, c in errors[bench].most_common(10)]))
    out.append("</body></html>")
    return "\n".join(out)


def write_report(out_dir, *, print_tables: bool = True) -> Report:
    """Print the tables, write ``report.txt`` and ``report.html`` into ``out_dir``; return a :class:`Report`."""
    out_dir = Path(out_dir)
    metrics = _load_metrics(out_dir)
    text, data = build_tables(metrics)
    errors = _error_messages(out_dir)
    if errors:
        lines = ["\nMost frequent errors"]
        for bench, counter in sorted(errors.items()):
            lines.extend(f"  {bench}: {count} × {message}" for message, count in counter.most_common(5))
        text += "\n".join(lines) + "\n"
    if print_tables:
        print(text)
    text_path = out_dir / REPORT_TXT
    text_path.write_text(text, encoding="utf-8")
    html_path = out_dir / REPORT_HTML
    html_path.write_text(render_html(data, errors, f"Evaluation report — {os.path.basename(out_dir.resolve())}"),
                         encoding="utf-8")
    return Report(path=html_path, text_path=text_path, text=text)
