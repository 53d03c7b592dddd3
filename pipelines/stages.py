"""The CPU stages of the pipeline and the row formats between stages.

    input rows (driver) ──► PreprocessStage ──► packs ──► ReplicaStage (replica.py) ──► generated rows
                                                                   ──► ScoreStage ──► prediction rows (schema.py)

* **Input rows** (`input_table`): `Sample.to_record()` + the sample's media (kind, bytes or path) + the reader's
  error. Media stay encoded (bytes or paths) until a preprocessing actor decodes them.
* **PreprocessStage** (CPU actor pool): builds the benchmark's chat messages, runs the `ernie_vl` processor (media
  decode, resize, patchify, chat template, tokenize) and emits *packs*: one row per replica call, closed when the
  pack's work (prompt tokens, text + visual, plus new tokens) would exceed `pack_tokens` or it holds `pack_rows`
  samples (`pack_batches` model batches, so the engine's continuous batching refills freed slots within a call).
  Each pack carries the samples' `ModelInputs` (ids, 3-D positions, indices, pixel rows) — never PIL images — and the error rows
  of its input batch, so every sample reaches the writer exactly once, failed or not. Batching by work here,
  not by row count, keeps the model stage's batches equally expensive whatever mix of images, videos and text.
* **ScoreStage** (CPU actor): detokenizes, splits a reasoning row's text at `</think>` into `reasoning` and the
  answer (`ernie_vl.reasoning.split_reasoning`), runs the benchmark's extractor and metric on the answer only, and
  returns rows in `PREDICTIONS_SCHEMA`. It never writes files: the driver does (see resume.py for why).

A row *reasons* (`thinking`) when its benchmark runs with `enable_thinking` and its rendered prompt ends with the
template's `<think>` (a prompt that ends in an assistant prefill, VLMEvalKit's MVBench, opens no reasoning block).

Every stage emits exactly one output row per sample it receives, error rows included.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from typing import Any, Iterator

import pyarrow as pa

from .trace import trace

MEDIA_TYPE = pa.list_(pa.struct([("kind", pa.string()), ("data", pa.large_binary()), ("path", pa.string())]))
RECORD_FIELDS = ("sample_id", "benchmark", "split", "question", "options", "targets", "category", "subcategory",
                 "group", "meta")
INPUT_SCHEMA = pa.schema(
    [(f, pa.string()) for f in RECORD_FIELDS] + [("media", MEDIA_TYPE), ("sample_error", pa.string())]
)
PACK_SCHEMA = pa.schema([("pack", pa.large_binary()), ("n", pa.int32()), ("work", pa.int64())])
GENERATED_SCHEMA = pa.schema(
    [(f, pa.string()) for f in RECORD_FIELDS]
    + [
        ("error", pa.string()),
        ("tokens", pa.list_(pa.int32())),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("visual_tokens", pa.int32()),
        ("media_items", pa.int32()),
        ("latency_s", pa.float64()),
        ("reused_prompt_tokens", pa.int32()),
        ("reused_media", pa.int32()),
        ("preprocess_s", pa.float64()),
        ("frame_indices", pa.list_(pa.int32())),
        ("frame_timestamps", pa.list_(pa.float64())),
        ("thinking", pa.bool_()),
    ]
)


# ----------------------------------------------------------------------------------------------- input rows


def input_row(sample) -> dict:
    """One `evals.sample.Sample` → an input row (record + media + reader error)."""
    from evals.data_cache import remote_uri

    row = sample.to_record()
    # a medium copied from remote storage (--data s3://...) travels as its URI: each node fetches its own copy
    row["media"] = [{"kind": m.kind, "data": m.data, "path": m.path and (remote_uri(m.path) or m.path)}
                    for m in sample.media]
    row["sample_error"] = sample.error
    return row


def input_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)


def sample_from_row(row: dict):
    """Rebuild the `Sample` (with media) a benchmark's `build_messages` expects."""
    from evals.sample import Media, Sample

    from evals.data_cache import local_copy

    sample = Sample.from_record(row)
    sample.media = [Media(kind=m["kind"], data=m["data"], path=local_copy(m["path"])) for m in (row.get("media") or [])]
    return sample


# ----------------------------------------------------------------------------------------------- errors


def classify_error(exc: BaseException) -> str:
    """`reason: message` for an exception raised while preparing or generating one sample."""
    try:
        from ernie_vl.errors import MediaError, ProcessingError
    except ImportError:  # pragma: no cover
        MediaError = ProcessingError = ()  # type: ignore[assignment]
    if isinstance(exc, MediaError):
        reason = "media"
    elif isinstance(exc, ProcessingError):
        reason = "input"
    elif type(exc).__module__.split(".")[0] in ("PIL", "av") or isinstance(exc, OSError):
        reason = "media"
    else:
        reason = "preprocess"
    msg = str(exc).strip().replace("\n", " ")
    if len(msg) > 500:
        msg = msg[:497] + "..."
    return f"{reason}: {type(exc).__name__}: {msg}"


# ----------------------------------------------------------------------------------------------- preprocessing


def _frames(metas: list) -> tuple[list[int] | None, list[float] | None]:
    """Sampled frame indices and timestamps (seconds) of every video of one sample, from the processor's metadata."""
    if not metas:
        return None, None
    idx: list[int] = []
    ts: list[float] = []
    for m in metas if isinstance(metas, (list, tuple)) else [metas]:
        d = m.to_dict() if hasattr(m, "to_dict") else dict(m)
        fi = d.get("frames_indices")
        if fi is not None:
            idx += [int(i) for i in fi]
            t = d.get("timestamps")
            if t is None and d.get("fps"):
                t = [int(i) / float(d["fps"]) for i in fi]
            ts += [float(x) for x in t or []]
    return (idx or None), (ts or None)


def _yield_cpu_to_replicas(niceness: int = 10) -> None:
    """Lower this CPU actor's scheduling priority. Where CPU stages share cores with a model replica (CPU-only
    machines, or a GPU replica's launch thread), the replica is the bottleneck: a preempted thread of its
    intra-op thread pool stalls every other one at the next barrier, so preprocessing should run in the gaps.
    On nodes with spare cores this changes nothing. (Ray already starts every worker at niceness 15; this puts the
    CPU stages below the replicas, capped at 19.)"""
    # NOTE: on Linux a nice value belongs to a thread, not the process: set it on every existing thread (the task
    # executor may be one of Ray's threads); threads created later inherit it from their creator.
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # pragma: no cover - not Linux
        tids = [0]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
        except (AttributeError, OSError):  # pragma: no cover - thread gone, or no setpriority
            pass


class PreprocessStage:
    """CPU actor: input rows → packs of prepared samples (see the module docstring).

    Built once per actor: the processor of the checkpoint and the benchmark objects.
    """

    def __init__(self, model_path: str, flavor: str, max_new_tokens: int, pack_rows: int, pack_tokens: int,
                 max_prompt_tokens: int | None = None, reuse: bool = True, thinking: dict[str, bool] | None = None):
        trace("preprocess", "init_start")
        import torch

        from ernie_vl import Processor
        from ernie_vl.config import ModelConfig
        from ernie_vl.reasoning import THINK_START

        torch.set_num_threads(1)  # many small ops; parallelism comes from the actor pool
        _yield_cpu_to_replicas()
        self.processor = Processor.from_pretrained(model_path)
        if reuse:  # a medium several samples use is decoded and processed once per actor
            from ernie_vl.media_cache import ProcessedMediaCache

            self.processor.media_cache = ProcessedMediaCache()
        cfg = ModelConfig.from_file(model_path)
        limit = cfg.text.max_position_embeddings - max_new_tokens
        self.max_prompt_tokens = min(limit, max_prompt_tokens) if max_prompt_tokens else limit
        self.flavor = flavor
        self.thinking = dict(thinking or {})  # benchmark -> enable_thinking
        self.think_start_id = self.processor.tokenizer.token_to_id(THINK_START)
        self.max_new_tokens = max_new_tokens
        self.pack_rows = pack_rows
        self.pack_tokens = pack_tokens
        self._benchmarks: dict[str, Any] = {}
        trace("preprocess", "ready")

    def _benchmark(self, name: str):
        if name not in self._benchmarks:
            from evals.registry import get_benchmark

            self._benchmarks[name] = get_benchmark(name)
        return self._benchmarks[name]

    def prepare(self, row: dict) -> dict:
        """One input row → a prepared item (record, tensors, counts) or an error item. Never raises."""
        t0 = time.perf_counter()
        item: dict[str, Any] = {k: row.get(k) for k in RECORD_FIELDS}
        item.update(error=None, prompt_tokens=0, visual_tokens=0, media_items=0, frame_indices=None, frame_timestamps=None,
                    inputs=None, max_new_tokens=self.max_new_tokens, thinking=False)
        if row.get("sample_error"):
            item["error"] = f"input: {row['sample_error']}"
        else:
            try:
                self._prepare_into(row, item)
            except Exception as exc:  # one bad sample must not stop the job: it becomes an error row
                item["error"] = classify_error(exc)
                item["inputs"] = None
        item["preprocess_s"] = time.perf_counter() - t0
        return item

    def _prepare_into(self, row: dict, item: dict) -> None:
        sample = sample_from_row(row)
        bench = self._benchmark(sample.benchmark)
        think = self.thinking.get(sample.benchmark, False)
        inputs, metadata = self.processor.prepare(
            bench.build_messages(sample, self.flavor), source=f"{sample.benchmark}/{sample.sample_id}",
            with_metadata=True, video_sampling=bench.video_policy(self.flavor),
            **({"enable_thinking": True} if think else {}),
        )
        n = inputs.num_prompt_tokens
        item["thinking"] = think and n > 0 and int(inputs.input_ids[-1]) == self.think_start_id
        item["prompt_tokens"] = n
        item["visual_tokens"] = inputs.num_visual_tokens
        item["media_items"] = len(inputs.image_spans) + len(inputs.video_spans)
        item["frame_indices"], item["frame_timestamps"] = _frames(metadata)
        if n > self.max_prompt_tokens:
            item["error"] = (f"prompt_too_long: {n} prompt tokens ({item['visual_tokens']} visual) exceed the limit "
                             f"of {self.max_prompt_tokens}")
            return
        item["inputs"] = inputs

    def packs(self, items: list[dict]) -> Iterator[list[dict]]:
        """Group prepared items into packs by work; error items ride along in the current pack for free."""
        cur: list[dict] = []
        work = rows = 0
        for it in items:
            w = it["prompt_tokens"] + it["max_new_tokens"] if it["inputs"] is not None else 0
            if cur and w and (rows + 1 > self.pack_rows or work + w > self.pack_tokens):
                yield cur
                cur, work, rows = [], 0, 0
            cur.append(it)
            work += w
            rows += 1 if w else 0
        if cur:
            yield cur

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        t0 = time.perf_counter()
        items = [self.prepare(r) for r in batch.to_pylist()]
        trace("preprocess", "call", n=len(items), s=round(time.perf_counter() - t0, 4))
        for pack in self.packs(items):
            work = sum(it["prompt_tokens"] + it["max_new_tokens"] for it in pack if it["inputs"] is not None)
            yield pa.Table.from_pydict(
                {"pack": [pickle.dumps(pack, protocol=5)], "n": [len(pack)], "work": [work]}, schema=PACK_SCHEMA
            )


def unpack(table: pa.Table) -> list[dict]:
    """Pack rows → prepared items, in order."""
    items: list[dict] = []
    for blob in table.column("pack").to_pylist():
        items += pickle.loads(blob)
    return items


def generated_table(rows: list[dict]) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in GENERATED_SCHEMA}
    return pa.Table.from_pydict(cols, schema=GENERATED_SCHEMA)


# ----------------------------------------------------------------------------------------------- scoring


class ScoreStage:
    """CPU actor: generated rows → prediction rows (decode, extract, score). Pure: writes nothing."""

    def __init__(self, model_path: str, flavor: str, fingerprints: dict[str, str], model_name: str):
        from ernie_vl.tokenizer import Tokenizer

        _yield_cpu_to_replicas()
        self.tokenizer = Tokenizer.from_pretrained(model_path)
        self.flavor = flavor
        self.fingerprints = fingerprints
        self.model_name = model_name
        self._benchmarks: dict[str, Any] = {}

    def _benchmark(self, name: str):
        if name not in self._benchmarks:
            from evals.registry import get_benchmark

            self._benchmarks[name] = get_benchmark(name)
        return self._benchmarks[name]

    def score_row(self, r: dict) -> dict:
        from ernie_vl.reasoning import split_reasoning

        from .schema import PREDICTION_NAMES

        out = {k: r.get(k) for k in PREDICTION_NAMES if k in r}
        try:
            targets = json.loads(r.get("targets") or "[]")
            out["target"] = " | ".join(str(t) for t in targets)
        except (TypeError, ValueError):
            out["target"] = None
        out.update(flavor=self.flavor, model=self.model_name, fingerprint=self.fingerprints[r["benchmark"]])
        tokens = r.get("tokens")
        out["generated_tokens"] = len(tokens) if tokens is not None else 0
        if r.get("error") is None:
            record = {k: r.get(k) for k in RECORD_FIELDS}
            try:
                text = self.tokenizer.decode(tokens or [], skip_special_tokens=True)
                split = split_reasoning(text, bool(r.get("thinking")))  # budget spent inside the reasoning: answer ""
                prediction = split.answer
                out["prediction"], out["reasoning"] = prediction, split.reasoning
                extracted, score = self._benchmark(r["benchmark"]).score(record, prediction, self.flavor)
                out["extracted"] = None if extracted is None else str(extracted)
                out["score"] = None if score is None else float(score)
                out["judge"] = "rule"  # a judge, when given, rescores judge-scored benchmarks at the end of the run
            except Exception as exc:  # a scorer bug must cost one row, not the run
                out["error"] = f"score: {type(exc).__name__}: {exc}"
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .schema import predictions_table

        t0 = time.perf_counter()
        out = predictions_table([self.score_row(r) for r in batch.to_pylist()])
        trace("score", "call", n=out.num_rows, s=round(time.perf_counter() - t0, 4))
        return out
