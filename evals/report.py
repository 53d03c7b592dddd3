"""Report of a finished run: text tables (``report.txt``) and the HTML page (``report.html``).

Inputs in ``out_dir``: ``metrics.parquet`` (from the pipeline or :func:`evals.scoring.rescore`; computed
for the ``official`` flavor if absent), ``predictions/*.parquet`` (the error summary and the sample browser) and
``manifest.json`` when the pipeline wrote one (settings and throughput). Outputs:

* ``report.txt``: a per-benchmark table (headline metric, errors, unparsed) for every flavor present, per-category
  tables (by category, and by any ``*_by_*`` grouping such as video duration), the most frequent errors;
* ``report.html`` with ``report_files/`` beside it (:func:`evals.html.render_report`): the same tables, the run's
  settings and throughput, bar charts with confidence-interval whiskers, and a browser of every sample row.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from evals.aggregate import COUNT_METRICS, has_error
from evals.html import REPORT_HTML, render_report
from evals.registry import list_benchmarks, get_benchmark
from evals.scoring import METRICS_FILE, read_predictions, rescore
from evals.storage import Storage
from evals.sample_browser import MediaHook

REPORT_TXT = "report.txt"


@dataclass(frozen=True)
class Report:
    """Where the report was written, and its text tables. Usable as a path (``os.fspath``)."""

    path: Path | str  # a URI when the run folder is on object storage
    text_path: Path | str
    text: str

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"


def _ci(metric: dict | None) -> str:
    """The 95 % interval of a metric row (``metrics.parquet`` ``ci_low`` / ``ci_high``), ``-`` without one."""
    if not metric or metric.get("ci_low") is None:
        return "-"
    return f"[{_fmt(metric['ci_low'])}, {_fmt(metric['ci_high'])}]"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _primary(benchmark: str) -> str:
    return get_benchmark(benchmark).primary_metric if benchmark in list_benchmarks() else "accuracy"


def _load_metrics(out_dir: Storage) -> list[dict]:
    if not out_dir.is_file(METRICS_FILE):
        rescore(out_dir, "official")
    return out_dir.read_table(METRICS_FILE).to_pylist()


def _load_rows(out_dir: Storage) -> list[dict]:
    try:
        return read_predictions(out_dir)
    except (FileNotFoundError, ValueError):
        return []


def _load_manifest(out_dir: Storage) -> dict | None:
    """The run's ``manifest.json`` (None if absent or unreadable: the report then says the settings are unknown)."""
    try:
        return json.loads(out_dir.read_text("manifest.json"))
    except (OSError, ValueError):
        return None


def _error_messages(rows: list[dict]) -> dict[str, Counter]:
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
    summary, intervals = [], []
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
            intervals.append(_ci(head))
    parts = ["Per-benchmark results (95% CI: percentile bootstrap over samples or their groups, metrics.parquet "
             "ci_low/ci_high)",
             _table(["benchmark", "flavor", "metric", "value", "95% CI", "n", "errors", "unparsed"],
                    [row[:4] + [ci] + row[4:] for row, ci in zip(summary, intervals)])]
    grouped: dict[str, dict[str, list[dict]]] = {}
    for m in metrics:
        if m["category"] is None or m["metric"] in COUNT_METRICS:
            continue
        grouped.setdefault(m["benchmark"], {}).setdefault(f"{m['metric']} [{m['flavor']}]", []).append(m)
    for bench in benchmarks:
        for title, rows in sorted(grouped.get(bench, {}).items()):
            parts.append(f"\n{bench}: {title}")
            parts.append(_table(["category", "value", "95% CI", "n"],
                                [[str(r["category"]), _fmt(r["value"]), _ci(r), str(r["n"])] for r in rows]))
    return "\n".join(parts) + "\n", {"summary": summary, "grouped": grouped, "lookup": lookup,
                                      "benchmarks": benchmarks, "flavors": flavors}


def write_report(out_dir, *, print_tables: bool = True, media: MediaHook | None = None) -> Report:
    """Print the tables, write ``report.txt`` and ``report.html`` (+ ``report_files/``) into ``out_dir``; return a
    :class:`Report`. ``media``: a hook writing thumbnails of the samples' images and videos
    (:data:`evals.sample_browser.MediaHook`; ``pipelines.report_media.thumbnails`` is the one ``ernie-vl report``
    passes), none without it. ``out_dir`` on object storage (``s3://…``): the files are written to a temporary
    folder and uploaded there (:meth:`evals.storage.Storage.local_folder`); the :class:`Report` then names URIs."""
    out_dir = Storage.at(out_dir)
    metrics = _load_metrics(out_dir)
    text, data = build_tables(metrics)
    rows = _load_rows(out_dir)
    errors = _error_messages(rows)
    if errors:
        lines = ["\nMost frequent errors"]
        for bench, counter in sorted(errors.items()):
            lines.extend(f"  {bench}: {count} × {message}" for message, count in counter.most_common(5))
        text += "\n".join(lines) + "\n"
    if print_tables:
        print(text)
    with out_dir.local_folder() as local:
        text_path = local / REPORT_TXT
        text_path.write_text(text, encoding="utf-8")
        html_path = render_report(local, data, rows, primary=_primary, manifest=_load_manifest(out_dir),
                                  errors=errors, title=f"Evaluation report — {out_dir.name}", media=media)
    if out_dir.local_path is None:
        return Report(path=out_dir.display(html_path.name), text_path=out_dir.display(REPORT_TXT), text=text)
    return Report(path=html_path, text_path=text_path, text=text)
