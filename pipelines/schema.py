"""The Parquet contract of an evaluation run: one place that defines every column written to `--out`.

    OUT/
      predictions/part-<benchmark>-<fp12>-<ids16>.parquet   one row per sample (PREDICTIONS_SCHEMA)
      metrics.parquet                                        one row per (benchmark, flavor, metric, category):
                                                             evals.aggregate.METRIC_COLUMNS, written by evals.scoring
      manifest.json                                          fingerprint, settings, counts, throughput, history
      runs/<benchmark>-<fp12>/...                            earlier runs whose fingerprint differs (never mixed)

pandas, pyarrow and DuckDB read these directly: `pd.read_parquet("OUT/predictions")`,
`duckdb.sql("select * from 'OUT/predictions/*.parquet'")`.

The first ten prediction columns are `evals.sample.Sample.to_record()` verbatim (JSON strings for options, targets,
meta), so `evals` rescoring reads a predictions table back without a helper.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

# (name, type, description) — the table below is the documentation (the README's output schema is generated from it).
PREDICTION_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("sample_id", pa.string(), "sample id, unique within (benchmark, split), stable across runs"),
    ("benchmark", pa.string(), "benchmark registry name"),
    ("split", pa.string(), "split name"),
    ("question", pa.string(), "question text as published"),
    ("options", pa.string(), "JSON object {letter: text}; '{}' for open questions"),
    ("targets", pa.string(), "JSON list of accepted answers"),
    ("category", pa.string(), "reporting category (null if none)"),
    ("subcategory", pa.string(), "secondary category (null if none)"),
    ("group", pa.string(), "group key: MME image pair, MMBench circular group, Video-MME video (null if none)"),
    ("meta", pa.string(), "JSON object of extra fields a metric needs"),
    ("target", pa.string(), "accepted answers joined with ' | ' (for reading)"),
    ("prediction", pa.string(), "the model's decoded answer (special tokens removed; with --thinking the text after "
                                "</think>, '' if the budget ended inside the reasoning); null on error"),
    ("reasoning", pa.string(), "with --thinking: the text before </think> (all of it if never closed); else null"),
    ("extracted", pa.string(), "answer extracted from the prediction by the benchmark's extractor"),
    ("score", pa.float64(), "per-sample score of the flavor (null on error)"),
    ("judge", pa.string(), "how extracted/score were obtained: 'rule' (the benchmark's own rule) or the name of the "
                           "judge model whose reply gave them (judge-scored benchmarks); null on error"),
    ("error", pa.string(), "null, or why this sample failed ('media: ...', 'prompt_too_long: ...', ...)"),
    ("finish_reason", pa.string(), "'stop' (EOS) or 'length' (max_new_tokens or --max-answer-tokens reached); null "
                                   "on error"),
    ("prompt_tokens", pa.int32(), "prompt length in tokens, text + visual"),
    ("visual_tokens", pa.int32(), "image and video placeholder tokens in the prompt"),
    ("media_items", pa.int32(), "images and videos in the prompt"),
    ("generated_tokens", pa.int32(), "new tokens generated, EOS included"),
    ("latency_s", pa.float64(), "seconds from the start of the sample's model batch to its last token"),
    ("preprocess_s", pa.float64(), "seconds spent decoding media and building the prompt tensors"),
    ("reused_prompt_tokens", pa.int32(), "prompt tokens taken from a prefix prefilled once for several samples (0: none)"),
    ("reused_media", pa.int32(), "images/videos whose encoded features were reused, not computed for this sample"),
    ("frame_indices", pa.list_(pa.int32()), "video frames sampled (indices into the source video); null without video"),
    ("frame_timestamps", pa.list_(pa.float64()), "timestamps (s) of the sampled frames; null without video"),
    ("flavor", pa.string(), "prompt/scoring convention: official, lmms-eval, vlmevalkit"),
    ("model", pa.string(), "checkpoint folder name"),
    ("fingerprint", pa.string(), "run fingerprint of this benchmark (see manifest.json 'fingerprint_parts')"),
]

PREDICTIONS_SCHEMA = pa.schema(
    [pa.field(n, t) for n, t, _ in PREDICTION_COLUMNS],
    metadata={b"ernie_vl.schema_version": SCHEMA_VERSION.encode()},
)
PREDICTION_NAMES = [n for n, _, _ in PREDICTION_COLUMNS]

# Identity of a row: a sample is written at most once per (benchmark, fingerprint); within a benchmark the key is
# (split, sample_id) because sample ids are only unique within a split.
KEY_COLUMNS = ("split", "sample_id")


def predictions_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts with every prediction column; missing ones become null) → a table in PREDICTIONS_SCHEMA."""
    cols = {name: [r.get(name) for r in rows] for name in PREDICTION_NAMES}
    return pa.Table.from_pydict(cols, schema=PREDICTIONS_SCHEMA)


def schema_markdown() -> str:
    """The columns as a Markdown table (used for the README section)."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for n, t, d in PREDICTION_COLUMNS:
        lines.append(f"| `{n}` | {t} | {d} |")
    return "\n".join(lines)
