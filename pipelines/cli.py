"""`ernie-vl eval | score | report | compare`: the batch evaluation commands.

`add_eval_commands(subparsers)` registers them on the `ernie-vl` parser (ernie_vl_cli/ calls it when this package
is importable). Each command function takes the argparse namespace and returns an exit code. Ray and the pipeline
modules are imported only when a command runs, so `ernie-vl --help` stays fast.

    ernie-vl eval --benchmark demo --out results/
    ernie-vl eval --benchmark mmbench --data ~/LMUData/MMBench_DEV_EN.tsv --out results/mmbench --replicas 2
    ernie-vl score results/ --flavor vlmevalkit
    ernie-vl score results/ --judge-url http://127.0.0.1:8000/v1 --judge-model ernie-vl-tiny
    ernie-vl report results/
    ernie-vl compare results/run-a results/run-b --out results/compare
"""

from __future__ import annotations

import argparse
import sys


def _benchmark_specs(a) -> list:
    """`--benchmark` (repeatable, or comma-separated) paired with `--data` (same order; `NAME=PATH` also works)."""
    from .config import BenchmarkSpec

    names = [n.strip() for b in a.benchmark for n in b.split(",") if n.strip()]
    data_by_name, positional = {}, []
    for d in a.data or []:
        name, sep, path = d.partition("=")
        if sep and name in names:
            data_by_name[name] = path
        else:
            positional.append(d)
    if positional and len(positional) != len([n for n in names if n not in data_by_name]):
        raise ValueError(
            f"{len(positional)} --data path(s) for {len(names)} benchmark(s): give one --data per benchmark in the "
            "same order, or --data NAME=PATH"
        )
    it = iter(positional)
    splits = _splits(getattr(a, "split", None) or [], names)
    specs = []
    for n in names:
        path = data_by_name.get(n) or (next(it) if positional else None)
        specs.append(BenchmarkSpec(name=n, data=path, limit=a.limit, split=splits.get(n)))
    return specs


def _splits(values: list[str], names: list[str]) -> dict[str, str]:
    """`--split NAME` (every benchmark) or `--split BENCHMARK=NAME` (repeatable) -> {benchmark: split}."""
    out: dict[str, str] = {}
    for v in values:
        bench, sep, split = v.partition("=")
        if sep:
            if bench not in names:
                raise ValueError(f"--split {v}: {bench!r} is not one of the benchmarks ({', '.join(names)})")
            out[bench] = split
        else:
            out.update({n: v for n in names if n not in out})
    return out


def _demo_model() -> str:
    """The command line's default checkpoint: the embedded demo model (built on first use)."""
    from ernie_vl.demo_model import demo_model_path

    return str(demo_model_path())


def cmd_eval(a) -> int:
    from .batch_eval import run_eval
    from .config import EvalConfig

    try:
        judge = _judge_settings(a)
    except ValueError as e:
        print(f"ernie-vl eval: error: {e}", file=sys.stderr)
        return 2
    cfg = EvalConfig(
        benchmarks=_benchmark_specs(a),
        out=a.out,
        model=a.model or _demo_model(),
        flavor=a.flavor,
        max_new_tokens=a.max_new_tokens,
        do_sample=a.temperature > 0,
        temperature=a.temperature if a.temperature > 0 else 1.0,
        top_p=a.top_p,
        top_k=a.top_k,
        seed=a.seed,
        dtype=a.dtype,
        thinking=a.thinking,
        max_answer_tokens=a.max_answer_tokens,
        replicas=a.replicas,
        batch_size=a.batch_size,
        batch_tokens=a.batch_tokens,
        max_prompt_tokens=a.max_prompt_tokens,
        expert_shards=a.expert_shards,
        reuse=not a.no_reuse,
        num_gpus_per_replica=a.gpus_per_replica,
        progress=not a.quiet,
        judge=judge,
    )
    from evals.errors import DatasetError

    from .batch_eval import check_inputs

    result = None
    try:
        check_inputs(cfg)  # unknown benchmark, bad --data, --expert-shards: fail before starting Ray
        result = run_eval(cfg, verbose=a.verbose, num_cpus=a.num_cpus)
    except (KeyError, DatasetError, NotImplementedError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ernie-vl eval: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nernie-vl eval: interrupted; rows written so far are kept — rerun the same command to resume "
              f"({cfg.out})", file=sys.stderr)
        return 130
    except Exception as e:  # what the Ray cluster could not carry the run through: one line, no traceback
        from .cluster_failure import describe, is_cluster_failure

        if not is_cluster_failure(e):
            raise
        print(f"ernie-vl eval: error: {describe(e)} ({cfg.out})", file=sys.stderr)
        return 1
    finally:
        import ray

        if ray.is_initialized() and (result is None or result.started_ray):
            ray.shutdown()  # only a local instance this command started (run_eval starts it lazily)
    print(format_summary(result), file=sys.stdout)
    return 0 if result.complete else 1


def format_summary(result) -> str:
    """The end-of-run summary: counts per benchmark, failure reasons, headline metrics (counts such as `answered`
    are in metrics.parquet and the report), where the files are."""
    from evals.aggregate import COUNT_METRICS

    m = result.manifest
    lines = []
    for name in m["last_run"]["benchmarks"]:
        b = m["benchmarks"][name]
        p = b["progress"]
        line = (f"{name}: {b['rows']}/{b['total']} rows ({b['done']} ok, {b['failed']} failed; "
                f"{b['written']} written now, {b['skipped']} already done)")
        if b["written"]:
            line += (f" in {p['elapsed_s']:.1f}s, {p['samples_per_s']:.2f} samples/s, "
                     f"{p['generated_tokens_per_s']:.0f} tok/s")
        lines.append(line)
        for reason, n in sorted(b["errors"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  failed ({reason}): {n} — e.g. {b['error_examples'][reason]}")
        scoring = b.get("scoring") or {}
        if scoring.get("method") == "judge":
            lines.append(f"  scored by judge {scoring['judge_model']}: {scoring['asked']} asked, {scoring['cached']} "
                         f"from the cache, {scoring['failed']} failed")
        if b["missing"]:
            lines.append(f"  INCOMPLETE: {b['missing']} sample(s) not written; rerun the same command to finish")
        for r in result.metrics:
            if r["benchmark"] == name and r["category"] is None and r["metric"] not in COUNT_METRICS:
                v = "nan" if r["value"] is None else f"{r['value']:.2f}"
                if r.get("ci_low") is not None:  # the 95 % interval (evals.bootstrap)
                    v += f" [95% CI {r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                lines.append(f"  {r['metric']} ({r['flavor']}) = {v} over {r['n']}")
    for note in result.notes:
        lines.append(f"note: {note}")
    lines.append(f"results: {result.out}/predictions/ (Parquet), {result.out}/metrics.parquet, {result.out}/manifest.json")
    return "\n".join(lines)


def _judge_settings(a):
    """The LLM judge of `--judge-url` + `--judge-model` (both or neither; ValueError otherwise), None without one."""
    from evals.judge_client import JudgeSettings

    if not a.judge_url and not a.judge_model:
        return None
    if not (a.judge_url and a.judge_model):
        raise ValueError("--judge-url and --judge-model go together")
    return JudgeSettings(url=a.judge_url, model=a.judge_model, api_key_env=a.judge_api_key_env,
                         concurrency=a.judge_concurrency, timeout_s=a.judge_timeout, max_retries=a.judge_retries)


def _add_judge_args(s) -> None:
    from evals.judge_client import DEFAULT_KEY_ENV

    g = s.add_argument_group("LLM judge (judge-scored benchmarks: mathvista, mmvet, charxiv)")
    g.add_argument("--judge-url", help="OpenAI-compatible base URL of the judge, e.g. http://127.0.0.1:8000/v1 "
                                       "(`ernie-vl serve` is one); without it those benchmarks use their rule")
    g.add_argument("--judge-model", help="model name sent to the judge (part of the judge cache key)")
    g.add_argument("--judge-api-key-env", default=DEFAULT_KEY_ENV,
                   help="environment variable holding the judge's API key (then OPENAI_API_KEY; none: no key sent)")
    g.add_argument("--judge-concurrency", type=int, default=8, help="judge requests in flight at most")
    g.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per judge request")
    g.add_argument("--judge-retries", type=int, default=4,
                   help="retries of a request after a connection error, timeout, 429 or 5xx (exponential backoff)")


def cmd_score(a) -> int:
    from evals.judge import Judge
    from evals.scoring import rescore, scoring_record

    from .manifest import record_scoring
    from .resume import RunLock

    try:
        settings = _judge_settings(a)
        with RunLock(a.out_dir):  # it rewrites prediction files: never beside a running `ernie-vl eval`
            judge = Judge(settings, a.out_dir) if settings is not None else None
            metrics = rescore(a.out_dir, a.flavor, judge)
            scoring = {name: scoring_record(name, judge) for name in sorted({m["benchmark"] for m in metrics})}
            record_scoring(a.out_dir, scoring, a.flavor)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"ernie-vl score: error: {e}", file=sys.stderr)
        return 2
    print(f"rescored {a.out_dir} with flavor {a.flavor}")
    failed = 0
    for name, record in scoring.items():
        if record["method"] == "judge":
            failed += record["failed"]
            print(f"  {name}: judge {record['judge_model']}: {record['asked']} asked, {record['cached']} from the "
                  f"cache, {record['failed']} failed{' (' + record['error'] + ')' if record.get('error') else ''}")
    if failed:
        print(f"ernie-vl score: the judge did not answer {failed} prompt(s); those rows are scored by rule — run the "
              "command again to ask again", file=sys.stderr)
    return 1 if failed else 0


def cmd_report(a) -> int:
    from evals.report import write_report

    from .report_media import media_hook

    res = write_report(a.out_dir, media=None if a.no_media else media_hook(a.out_dir))
    print(f"wrote {res}" if res is not None else f"wrote the report of {a.out_dir}")
    return 0


def cmd_compare(a) -> int:
    from evals.compare import InputMismatch

    from .compare_runs import InputsDiffer, run_compare

    try:
        res = run_compare(a.runs, a.out, media=not a.no_media)
    except (InputsDiffer, InputMismatch, ValueError, FileNotFoundError) as e:
        print(f"ernie-vl compare: error: {e}", file=sys.stderr)
        return 2
    for note in res.notes:
        print(f"note: {note}")
    for r in res.rows:
        if r["category"] is None:
            ci = "" if r.get("ci_low") is None else f" [95% CI {r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
            p = "" if r.get("p_value") is None else f" p={r['p_value']:.3g} ({r['test']})"
            flips = ("" if r.get("flips_to_right") is None else
                     f", flips +{r['flips_to_right']} / -{r['flips_to_wrong']}")
            print(f"{r['benchmark']} {r['metric']} [{r['flavor']}] {r['run_a']} -> {r['run_b']}: "
                  f"{r['value_a']:.2f} -> {r['value_b']:.2f} ({r['diff']:+.2f}{ci}{p}) over {r['n']}{flips}")
    wrote = [res.out / "compare.parquet", res.out / "flips.parquet", *res.pages]
    print("wrote " + ", ".join(map(str, wrote)) + f" ({len(res.flips)} flipped samples)")
    return 0


def add_eval_commands(subparsers) -> None:
    """Register `eval`, `score` and `report` on an argparse subparsers object."""
    s = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on benchmarks (Ray Data pipeline → Parquet); rerun to resume",
        description="Distributed batch evaluation. Rerunning the same command resumes: samples already written "
                    "with the same fingerprint are skipped.",
    )
    s.add_argument("--benchmark", action="append", required=True,
                   help="benchmark name (repeatable or comma-separated), e.g. mmbench, pope, demo")
    s.add_argument("--data", action="append", help="benchmark file/folder as published, local or a URI such as "
                                                   "s3://bucket/MMBench (one per benchmark, or NAME=PATH); "
                                                   "not needed for demo")
    s.add_argument("--model", help="checkpoint folder (default: the embedded demo checkpoint, trained on the demo "
                                   "benchmark's task)")
    s.add_argument("--out", required=True, help="output folder (predictions/, metrics.parquet, manifest.json): a local "
                                                "path or a URI, e.g. s3://bucket/run (also gs://, hdfs://)")
    s.add_argument("--limit", type=int, help="first N samples of each benchmark")
    s.add_argument("--split", action="append",
                   help="the split to evaluate, for every benchmark or as NAME=SPLIT (repeatable); default: each "
                        "benchmark's own (e.g. refcoco val, hallusionbench image, most others test/validation)")
    s.add_argument("--replicas", type=int, default=1, help="model replicas (each holds --gpus-per-replica GPUs)")
    s.add_argument("--batch-size", type=int, default=16, help="most samples per model batch")
    s.add_argument("--batch-tokens", type=int, default=16384,
                   help="most work per model batch: prompt tokens (text + visual) + new tokens, summed")
    s.add_argument("--max-new-tokens", type=int, default=32,
                   help="most generated tokens per sample, reasoning and answer together")
    s.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="the model reasons first (enable_thinking); the reasoning goes to the `reasoning` column and "
                        "only the answer after </think> is scored (default: each benchmark's default, off)")
    s.add_argument("--max-answer-tokens", type=int,
                   help="with --thinking: end a sample this many tokens after its </think> (default: no cap)")
    s.add_argument("--max-prompt-tokens", type=int, help="longer prompts become error rows (default: model limit)")
    s.add_argument("--flavor", choices=["official", "lmms-eval", "vlmevalkit"], default="official",
                   help="prompt and scoring convention")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dtype", help="model dtype (default: bfloat16 on GPUs, the checkpoint's dtype on CPU)")
    s.add_argument("--expert-shards", type=int, default=1, help="expert-parallel ranks per replica")
    s.add_argument("--no-reuse", action="store_true",
                   help="encode every sample's images/videos (default: each distinct medium once per replica)")
    s.add_argument("--gpus-per-replica", type=float, help="GPUs per replica rank (default: 1 if the cluster has GPUs)")
    s.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (ignored with RAY_ADDRESS)")
    s.add_argument("--quiet", action="store_true", help="no live progress lines")
    s.add_argument("--verbose", action="store_true", help="keep Ray Data's own logging")
    _add_judge_args(s)
    s.set_defaults(func=cmd_eval)

    s = subparsers.add_parser("score", help="recompute scores and metrics of an eval output folder (with an LLM judge "
                                            "for the judge-scored benchmarks when given)")
    s.add_argument("out_dir")
    s.add_argument("--flavor", choices=["official", "lmms-eval", "vlmevalkit"], default="official")
    _add_judge_args(s)
    s.set_defaults(func=cmd_score)

    s = subparsers.add_parser("report", help="write a human-readable report of an eval output folder (report.txt, "
                                             "report.html + report_files/)")
    s.add_argument("out_dir")
    s.add_argument("--no-media", action="store_true",
                   help="no image/video thumbnails in the sample browser (they are read from the run's data folders)")
    s.set_defaults(func=cmd_report)

    s = subparsers.add_parser(
        "compare", help="compare eval output folders sample by sample (differences with 95 % intervals, paired "
                        "tests, flipped samples) → compare.parquet, flips.parquet, compare.html",
        description="Every pair of runs (A before B, in the order given), per benchmark and flavor present in both, "
                    "over the samples both hold. Refuses runs whose benchmarks were asked other inputs (prompt "
                    "version, flavor, video frame policy, or other questions).")
    s.add_argument("runs", nargs="+", metavar="RUN", help="eval output folders (two or more)")
    s.add_argument("--out", required=True, help="output folder for compare.parquet, flips.parquet and the pages")
    s.add_argument("--no-media", action="store_true", help="no image/video thumbnails in the pages' sample browser")
    s.set_defaults(func=cmd_compare)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.cli eval ...` (the same commands without the rest of `ernie-vl`)."""
    p = argparse.ArgumentParser(prog="ernie-vl")
    add_eval_commands(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(argv)
    return int(a.func(a) or 0)


if __name__ == "__main__":
    sys.exit(main())
