"""The HTML pages of a run and of a comparison of two runs, rendered from the Jinja2 templates in ``templates/``.

``report.html`` (:func:`render_report`): the run's settings and throughput (``manifest.json``), per benchmark its
metrics as tables and bar charts (confidence-interval whiskers where ``metrics.parquet`` has ``ci_low`` /
``ci_high``), the most frequent errors, and the sample browser. ``compare.html`` (:func:`render_compare`): the
differences of a ``compare.parquet`` table (B − A per benchmark, flavor, metric and category, with interval,
p-value and flips) as a table and diverging charts, and the sample browser over both runs' rows, filterable by flip.

Both pages share one layout (``base.html.jinja``) with inline CSS and JavaScript and no external asset: they work
opened from the file system, offline. The sample browser's rows live next to the page in ``<page>_files/`` (see
:mod:`evals.sample_browser`), with the thumbnails a media hook writes into ``<page>_files/media/``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jinja2

from evals.aggregate import COUNT_METRICS
from evals.sample_browser import MEDIA_DIR, MediaHook, compare_records, report_records, row_key, write_browser_data
from evals.svg import Bar, bar_chart, diff_chart

REPORT_HTML = "report.html"
COMPARE_HTML = "compare.html"
SUMMARY_HEADERS = ["benchmark", "flavor", "metric", "value", "n", "errors", "unparsed"]
_SETTINGS = ("model", "flavor", "dtype", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "seed",
             "thinking", "max_answer_tokens", "replicas", "expert_shards", "batch_size", "batch_tokens",
             "max_prompt_tokens", "reuse")


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates (package data of :mod:`evals`), HTML-escaping every value unless marked safe."""
    return jinja2.Environment(loader=jinja2.PackageLoader("evals", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def fmt(value) -> str:
    """A table cell: ``n/a`` for missing, two decimals for fractional numbers, integers without a point."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}" if value.is_integer() else f"{value:.2f}"
    return str(value)


def _files_dir(out_dir: Path, page: str) -> Path:
    return out_dir / (Path(page).stem + "_files")


def _media(hook: MediaHook | None, rows: list[dict], files: Path) -> dict:
    """The hook's entries with their paths made relative to ``files`` (the page's data folder)."""
    if hook is None or not rows:
        return {}
    entries = hook(rows, files / MEDIA_DIR)

    def rebase(item: dict) -> dict:
        item = dict(item)
        if "src" in item:
            item["src"] = f"{MEDIA_DIR}/{item['src']}"
        if "frames" in item:
            item["frames"] = [rebase(f) for f in item["frames"]]
        return item

    return {key: [rebase(m) for m in items] for key, items in entries.items()}


def _write(out_dir: Path, page: str, template: str, context: dict) -> Path:
    path = out_dir / page
    path.write_text(environment().get_template(template).render(**context), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- report


def run_summary(manifest: dict | None) -> dict | None:
    """Settings (``[(name, value)]``) and per-benchmark throughput rows from a ``manifest.json``; None without one."""
    if not manifest:
        return None
    last = manifest.get("last_run") or {}
    config = last.get("config") or {}
    settings = [(k, fmt(config[k])) for k in _SETTINGS if config.get(k) is not None]
    if config.get("model") is None:  # the embedded tiny checkpoint: its name is in the fingerprint
        names = {str(((b.get("fingerprint_parts") or {}).get("checkpoint") or {}).get("name"))
                 for b in (manifest.get("benchmarks") or {}).values()}
        settings.insert(0, ("model", ", ".join(sorted(names - {"None"})) or "n/a"))
    if last.get("dtype"):
        settings.append(("dtype (resolved)", last["dtype"]))
    device = (last.get("resources") or {}).get("device")
    for key, value in (("device", device), ("started", last.get("started_at")), ("finished", last.get("finished_at")),
                       ("elapsed (s)", last.get("elapsed_s")), ("status", last.get("status")), ("host", last.get("host"))):
        if value is not None:
            settings.append((key, fmt(value)))
    packages = last.get("packages") or {}
    if packages:
        settings.append(("packages", ", ".join(f"{k} {v}" for k, v in sorted(packages.items()))))
    headers = ["benchmark", "status", "rows", "done", "failed", "samples/s", "generated tok/s", "elapsed (s)",
               "first row (s)", "media reused", "prefix tokens reused", "fingerprint"]
    rows = []
    for name, b in sorted((manifest.get("benchmarks") or {}).items()):
        p, reuse = b.get("progress") or {}, b.get("reuse") or {}
        rows.append([name, b.get("status", ""), fmt(b.get("rows")), fmt(b.get("done")), fmt(b.get("failed")),
                     fmt(p.get("samples_per_s")), fmt(p.get("generated_tokens_per_s")), fmt(p.get("elapsed_s")),
                     fmt(p.get("first_row_s")), fmt(reuse.get("media_reused")), fmt(reuse.get("prefix_tokens_reused")),
                     str(b.get("fingerprint", ""))[:12]])
    return {"settings": settings, "throughput_headers": headers, "throughput": rows}


def _is_percent(title: str, values: list) -> bool:
    return not any(t in title for t in ("score", "perception", "cognition")) and all((v or 0) <= 100 for v in values)


def _chart(title: str, rows: list[dict], label) -> dict:
    bars = [Bar(label(r), r["value"], r["n"], r.get("ci_low"), r.get("ci_high")) for r in rows]
    has_ci = any(b.has_ci for b in bars)
    svg = bar_chart(title, bars, 100.0 if _is_percent(title, [b.high or b.value for b in bars]) else None)
    table = [[b.label, fmt(b.value), fmt(b.n)] + ([fmt(b.low), fmt(b.high)] if has_ci else []) for b in bars]
    return {"svg": svg, "rows": table, "has_ci": has_ci}


def benchmark_sections(tables: dict, primary, errors: dict) -> list[dict]:
    """Per benchmark: the headline metric per flavor, then each per-category metric, as charts with tables."""
    lookup, out = tables["lookup"], []
    for bench in tables["benchmarks"]:
        metric = primary(bench)
        heads = [lookup[(bench, f, metric, None)] for f in tables["flavors"] if (bench, f, metric, None) in lookup]
        charts = [_chart(f"{metric} by flavor", heads, lambda r: r["flavor"])] if heads else []
        for title, rows in sorted(tables["grouped"].get(bench, {}).items()):
            heading = ("Accuracy by video length: " if "_by_duration" in title else "") + title
            charts.append(_chart(heading, rows, lambda r: str(r["category"])))
        out.append({"name": bench, "charts": charts, "errors": errors.get(bench, {}).most_common(10)
                    if errors.get(bench) else []})
    return out


def render_report(out_dir, tables: dict, rows: list[dict], *, primary, manifest: dict | None = None,
                  errors: dict | None = None, title: str = "Evaluation report", media: MediaHook | None = None,
                  page: str = REPORT_HTML) -> Path:
    """Write ``out_dir/report.html`` and its sample data ``out_dir/report_files/``; return the page's path.

    ``tables``: :func:`evals.report.build_tables`'s data; ``rows``: the prediction rows; ``primary(benchmark)``:
    its headline metric; ``errors``: ``{benchmark: Counter(message)}``; ``media``: thumbnails of the rows' images
    and videos (none without it: the browser then says how many media a row had)."""
    out_dir, errors = Path(out_dir), errors or {}
    files = _files_dir(out_dir, page)
    records = report_records(rows, _media(media, rows, files))
    stats = write_browser_data(files, records, "report")
    lookup = tables["lookup"]
    error_bars = [Bar(f"{b} [{f}]", lookup[(b, f, "errors", None)]["value"], lookup[(b, f, "errors", None)]["n"])
                  for b in tables["benchmarks"] for f in tables["flavors"] if (b, f, "errors", None) in lookup]
    context = {
        "title": title, "summary_headers": SUMMARY_HEADERS, "summary_rows": tables["summary"],
        "run": run_summary(manifest), "benchmarks": benchmark_sections(tables, primary, errors),
        "error_chart": bar_chart("Rows with an error (count)", error_bars, colour="#C44E52") if error_bars else "",
        "browser_config": {"files": files.name, "labels": []},
        "browser_note": f"{stats['count']} prediction rows" + ("" if media else " (media not rendered)") + ".",
    }
    return _write(out_dir, page, "report.html.jinja", context)


# ---------------------------------------------------------------------------------------------------- compare


def _diff_chart(title: str, rows: list[dict], label) -> dict:
    bars = [Bar(label(r), r.get("diff"), r.get("n"), r.get("ci_low"), r.get("ci_high")) for r in rows]
    notes = [("" if r.get("p_value") is None else f"p={r['p_value']:.3g}") +
             (f" +{r['flips_to_right']}/−{r['flips_to_wrong']} flips" if r.get("flips_to_right") is not None else "")
             for r in rows]
    return {"title": title, "svg": diff_chart(title, bars, notes=notes)}


def render_compare(out_dir, comparison: list[dict], rows_a: list[dict], rows_b: list[dict], *,
                   labels: tuple[str, str] | None = None, runs: tuple[str, str] | None = None,
                   flips: dict | None = None, title: str | None = None, media: MediaHook | None = None,
                   page: str = COMPARE_HTML) -> Path:
    """Write ``out_dir/compare.html`` and its sample data ``out_dir/compare_files/``; return the page's path.

    ``comparison``: the rows of ``compare.parquet`` (``benchmark, flavor, metric, category, run_a, run_b, value_a,
    value_b, diff, ci_low, ci_high, p_value, n, flips_to_right, flips_to_wrong``); ``rows_a`` / ``rows_b``: the two
    runs' prediction rows; ``labels``: the runs' names (default: the table's ``run_a`` / ``run_b``); ``runs``: where
    they are (shown); ``flips``: ``{(benchmark, split, sample_id): flip}`` of :data:`evals.sample_browser.FLIPS`
    (default: from the rows' statuses); ``media``: as for :func:`render_report` (thumbnails of run A's samples,
    B's for samples only B has)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = comparison[0] if comparison else {}
    labels = tuple(labels or (first.get("run_a") or "A", first.get("run_b") or "B"))
    files = _files_dir(out_dir, page)
    keys_a = {row_key(r) for r in rows_a}
    only_b = [r for r in rows_b if row_key(r) not in keys_a]
    records = compare_records(rows_a, rows_b, _media(media, rows_a + only_b, files), flips)
    stats = write_browser_data(files, records, "compare")
    headers = ["benchmark", "flavor", "metric", "category", labels[0], labels[1], "diff", "CI low", "CI high",
               "p-value", "n", "flips to right", "flips to wrong"]
    overall = [r for r in comparison if r.get("category") is None and r.get("metric") not in COUNT_METRICS]
    table = [[r["benchmark"], r.get("flavor") or "", r["metric"], r.get("category") or "(overall)"] +
             [fmt(r.get(k)) for k in ("value_a", "value_b", "diff", "ci_low", "ci_high", "p_value", "n",
                                      "flips_to_right", "flips_to_wrong")] for r in overall]
    charts = []
    if overall:
        charts.append(_diff_chart(f"{labels[1]} − {labels[0]}, overall", overall,
                                  lambda r: f"{r['benchmark']} {r['metric']} [{r.get('flavor') or ''}]"))
    groups: dict[tuple, list[dict]] = {}
    for r in comparison:
        if r.get("category") is not None and r.get("metric") not in COUNT_METRICS:
            groups.setdefault((r["benchmark"], r["metric"], r.get("flavor") or ""), []).append(r)
    for (bench, metric, flavor), rows in sorted(groups.items()):
        charts.append(_diff_chart(f"{bench}: {metric} [{flavor}] by category", rows, lambda r: str(r["category"])))
    context = {
        "title": title or f"Comparison — {labels[0]} vs {labels[1]}", "labels": labels,
        "runs": list(zip(labels, runs)) if runs else [(label, "") for label in labels],
        "table_headers": headers, "table_rows": table, "charts": charts,
        "browser_config": {"files": files.name, "labels": list(labels)},
        "browser_note": f"{stats['count']} samples over both runs" + ("" if media else " (media not rendered)") + ".",
    }
    return _write(out_dir, page, "compare.html.jinja", context)
