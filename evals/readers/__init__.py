"""Readers for the published on-disk formats (local paths only; nothing is fetched).

* :mod:`evals.readers.tsv` — VLMEvalKit TSV (base64 images, index-reference images, option columns).
* :mod:`evals.readers.hf_parquet` — Hugging Face dataset Parquet shards (``<config>/<split>-*.parquet``).
* :mod:`evals.readers.files` — JSON / JSONL of the original releases, and file look-ups.
* :mod:`evals.readers.values` — cell-level parsing shared by all (missing values, list literals, options).
* :mod:`evals.readers.rows` — turning rows into Samples, with per-row errors instead of exceptions.
"""
