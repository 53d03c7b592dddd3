"""Benchmarks, prompts, answer extraction and metrics for ERNIE-4.5-VL batch evaluation.

Imports only the standard library, numpy and pyarrow/pandas — no torch, no ray — so metrics run anywhere.

Contract with the pipeline (keep stable)
-----------------------------------------
``evals.registry.get_benchmark(name)`` → a :class:`~evals.benchmarks.base.Benchmark` (names: mmmu,
mmbench, mme, chartqa, docvqa, textvqa, ai2d, ocrbench, pope, scienceqa, realworldqa, videomme,
mvbench, demo) with:

* ``load(data_path, limit=None) -> Iterator[Sample]`` — ``data_path`` is the file or folder exactly as
  published (VLMEvalKit TSV, Hugging Face Parquet folder, original release; ``None`` for ``demo``).
  A missing/unrecognised path raises :class:`DatasetError` at once; a bad row yields a Sample whose
  ``error`` says why (it is never skipped and never ends the process).
* ``build_messages(sample, flavor) -> list[dict]`` — chat messages
  ``[{"role": "user", "content": [{"type": "image", "image": bytes|path} | {"type": "video", "video":
  bytes|path} | {"type": "text", "text": str}, ...]}]``; an optional leading ``system`` message and an
  optional trailing ``assistant`` message (a prefill to continue, VLMEvalKit MVBench). Prompt template:
  lmms-eval default for ``official``/``lmms-eval``, VLMEvalKit for ``vlmevalkit``.
* ``video_sampling`` — ``{"num_frames": N}`` / ``{"fps": F}`` for video benchmarks, else None;
  ``video_policy(flavor)`` adds ``short_video``, how that flavor's harness samples a video with fewer frames
  than asked (``every_frame``, ``uniform_steps``, ``segment_midpoints``).
* ``thinking`` — whether the model reasons first (``enable_thinking``) unless the run says (default False).
* ``score(record, prediction, flavor) -> (extracted: str | None, score: float | None)`` with
  ``record = sample.to_record()``.
* ``aggregate(rows, flavor) -> list[metric row]`` — rows are records + ``prediction``, ``extracted``,
  ``score``, ``error``; metric rows are ``{benchmark, flavor, metric, category (None = overall),
  value, n}``. Rows with an error count as failures and are counted in the ``errors`` metric.

:class:`Sample` fields: ``sample_id`` (unique within benchmark + split, stable across runs),
``benchmark``, ``split``, ``question``, ``options`` ({letter: text}), ``media`` (list of
:class:`Media` ``(kind="image"|"video", data: bytes|None, path: str|None)`` in prompt order),
``targets`` (list[str]), ``category``, ``subcategory``, ``group`` (MME image pair, MMBench circular
group, Video-MME video), ``meta`` (JSON-serialisable extras a metric needs), ``error``.
``Sample.to_record()`` is the flat, JSON-serialisable form the pipeline saves as Parquet columns
``sample_id, benchmark, split, question, options, targets, category, subcategory, group, meta``
(``options``/``targets``/``meta`` as JSON strings) next to ``prediction, extracted, score, error``.

``evals.scoring.rescore(out_dir, flavor, judge=None)`` recomputes ``out_dir/metrics.parquet`` from
``out_dir/predictions/*.parquet`` (judge-scored benchmarks — ``Benchmark.judged``: mathvista, mmvet, charxiv — ask an
:class:`evals.judge.Judge` through the folder's reply cache when one is given); ``evals.report.write_report(out_dir)``
writes the text and HTML report.

Flavors: ``official`` | ``lmms-eval`` | ``vlmevalkit`` (:mod:`evals.flavors`); metrics in
:mod:`evals.metrics`, extractors in :mod:`evals.extract`.
"""

from evals.errors import DatasetError, FlavorError
from evals.flavors import FLAVORS
from evals.sample import Media, Sample

__all__ = ["DatasetError", "FlavorError", "FLAVORS", "Media", "Sample"]
