"""The Ray Data plan of a run: input blocks → PreprocessStage (CPU actors) → ReplicaStage (model actors) →
ScoreStage, the options of its actor pools, and the Ray Data settings the job runs with (`batch_eval` drives it)."""

from __future__ import annotations

import logging
from pathlib import Path

from .config import EvalConfig, ResourcePlan


class _HandledByTheDriver(logging.Filter):
    """Drops Ray Data's "exception raised from a task ... execution will now abort" record, traceback included, when
    the exception is a lost actor or node: the driver rebuilds the pipeline and says so in one line of its own
    (`run_eval`). Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        from .cluster_failure import is_lost_worker

        return not (record.exc_info and is_lost_worker(record.exc_info[1]))


def configure_ray_data(verbose: bool) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # our per-benchmark line replaces the per-operator bars
    ctx.execution_options.preserve_order = False
    ctx.execution_options.verbose_progress = False
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours
    executor_state = logging.getLogger("ray.data._internal.execution.streaming_executor_state")
    if not any(isinstance(f, _HandledByTheDriver) for f in executor_state.filters):
        executor_state.addFilter(_HandledByTheDriver())


# Every actor pool of the plan: no restarts by Ray. Ray Data 2.60 hands each pool's actors their map function and
# DataContext as object-store references, and Ray core logs an error for every restartable actor created with such
# arguments (its restart could fail if they were lost; ray-project/ray#57733). A lost actor or node is recovered by
# the driver instead (`run_eval`): the pipeline is built again over the samples not yet written.
POOL_ACTOR_OPTIONS = {"max_restarts": 0}


def build_dataset(refs: list, cfg: EvalConfig, plan: ResourcePlan, model_path: Path, fingerprints: dict[str, str],
                  dtype: str):
    """The Ray Data plan: input blocks → preprocess → replicas → score."""
    import warnings

    import ray.data

    from evals.registry import get_benchmark

    from .replica import ReplicaStage
    from .stages import PreprocessStage, ScoreStage

    # NOTE: max_restarts has no named map_batches parameter in Ray 2.60 and goes through the deprecated
    # **ray_remote_args (Ray's own docs still show map_batches(..., max_restarts=0)), hence the silenced warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
        ds = ray.data.from_arrow_refs(refs)
        ds = ds.map_batches(
            PreprocessStage,
            fn_constructor_kwargs=dict(model_path=str(model_path), flavor=cfg.flavor, max_new_tokens=cfg.max_new_tokens,
                                       pack_rows=cfg.batch_size * cfg.pack_batches,
                                       pack_tokens=cfg.batch_tokens * cfg.pack_batches,
                                       max_prompt_tokens=cfg.max_prompt_tokens, reuse=cfg.reuse,
                                       thinking={s.name: cfg.thinking_for(get_benchmark(s.name)) for s in cfg.benchmarks}),
            batch_size=cfg.batch_size * cfg.pack_batches,
            batch_format="pyarrow",
            zero_copy_batch=True,
            **POOL_ACTOR_OPTIONS,
            **plan.preprocess.map_batches_kwargs(),
        )
        ds = ds.map_batches(
            ReplicaStage,
            fn_constructor_kwargs=dict(model_path=str(model_path), dtype=dtype, device=plan.device,
                                       torch_threads=plan.torch_threads, expert_shards=cfg.expert_shards,
                                       batch_size=cfg.batch_size, batch_tokens=cfg.batch_tokens,
                                       generation=cfg.generation(), reuse=cfg.reuse,
                                       max_answer_tokens=cfg.max_answer_tokens),
            batch_size=1,  # one pack (a work-sized model batch) per call
            batch_format="pyarrow",
            **POOL_ACTOR_OPTIONS,
            **plan.replica.map_batches_kwargs(),
        )
        ds = ds.map_batches(
            ScoreStage,
            fn_constructor_kwargs=dict(model_path=str(model_path), flavor=cfg.flavor, fingerprints=fingerprints,
                                       model_name=model_path.name),
            batch_size=None,
            batch_format="pyarrow",
            **POOL_ACTOR_OPTIONS,
            **plan.score.map_batches_kwargs(),
        )
    return ds
