"""Distributed batch evaluation on Ray Data: benchmark files + checkpoint → Parquet predictions, metrics, manifest.

    from pipelines.config import EvalConfig, BenchmarkSpec
    from pipelines.batch_eval import run_eval
    result = run_eval(EvalConfig(benchmarks=[BenchmarkSpec("demo")], out="results/"))

Modules (one concept each): config (settings + resource plan), schema (the predictions' Parquet contract; the
metrics columns are evals.aggregate's, written by evals.scoring), fingerprint (run identity), stages (CPU
preprocessing and scoring actors), replica (model actors), resume (exactly-once output), progress (live progress),
manifest (manifest.json), batch_eval (the job: plan → scan → execute → commit → finalize), cli (`ernie-vl
eval|score|report`), bench (pipeline vs engine). Importing this package imports neither Ray nor torch.
"""
