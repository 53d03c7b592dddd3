"""Run configuration of a batch evaluation and the Ray resource plan derived from the cluster.

`EvalConfig` is a plain dataclass: what the user asked for (benchmarks, checkpoint, generation settings, sizes).
`ResourcePlan` is derived from it and from the cluster's resources in one place, `plan_resources`, so the same
command runs on a 2-core laptop (`ray.init(num_cpus=2)`) and on a multi-node GPU cluster unchanged.

NOTE: every actor asks for a *fractional* CPU on CPU-only machines. Ray Data reserves resources per operator;
two actors that each hold a whole CPU on a 2-CPU machine leave nothing for anything else and the job hangs.
On CPU-only machines `num_cpus` is a scheduling token, not a thread cap: the replica sets its torch thread count
itself (`torch_threads`, default: the node's cores shared between the replicas).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from evals.judge_client import JudgeSettings
from evals.storage import is_uri, location

from .cluster_failure import ClusterError

FLAVORS = ("official", "lmms-eval", "vlmevalkit")


@dataclass
class BenchmarkSpec:
    """One benchmark of a run: registry name, data path (None for `demo`), optional sample limit, split (None: the
    benchmark's `default_split`)."""

    name: str
    data: str | None = None
    limit: int | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("benchmark name is empty")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"--limit must be >= 0, got {self.limit}")


@dataclass
class EvalConfig:
    """Everything that defines one `ernie-vl eval` invocation.

    Generation settings (`max_new_tokens`, sampling, `seed`, reasoning), the checkpoint, `dtype` and `flavor` are part
    of the run fingerprint; sizes (`replicas`, `batch_size`, `batch_tokens`, ...) are not, they do not change results.
    `max_new_tokens` counts every generated token, reasoning and answer alike.
    """

    benchmarks: list[BenchmarkSpec]
    out: str
    model: str | None = None  # None: the embedded tiny checkpoint
    flavor: str = "official"
    # generation
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    dtype: str | None = None  # None: bfloat16 on GPUs, the checkpoint's dtype on CPU
    # reasoning: the prompt opens a <think> block, the model reasons, closes it and answers (see thinking_for)
    thinking: bool | None = None  # None: each benchmark's default (`Benchmark.thinking`, off)
    max_answer_tokens: int | None = None  # thinking rows: at most this many tokens after </think> (None: no cap)
    # sizes
    replicas: int = 1
    batch_size: int = 16  # most samples per model forward
    batch_tokens: int = 16384  # most work (prompt + new tokens, text + visual) per batch
    pack_batches: int = 4  # model batches per replica call (continuous batching refills slots within a call)
    max_prompt_tokens: int | None = None  # longer prompts become error rows (None: the model's position limit)
    expert_shards: int = 1
    reuse: bool = True  # encoded vision features reused per replica (same outputs, so not fingerprinted)
    preprocess_actors: int | None = None  # most CPU preprocessing actors (None: from the cluster size)
    num_gpus_per_replica: float | None = None  # None: 1 when the cluster has GPUs, else 0
    torch_threads: int | None = None  # CPU replicas only (None: the node's cores / replicas)
    # scoring: an LLM judge for the judge-scored benchmarks (None: their rule); not fingerprinted, it changes no
    # prediction, only extracted/score (evals.scoring.score_saved at the end of the run)
    judge: JudgeSettings | None = None
    # behaviour
    progress: bool = True
    max_pipeline_restarts: int = 4  # pipeline rebuilds after a lost actor or node (batch_eval.run_eval)

    def __post_init__(self) -> None:
        if not self.benchmarks:
            raise ValueError("no benchmark given")
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"a benchmark is named twice: {names}")
        if self.flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {self.flavor!r}; expected one of {', '.join(FLAVORS)}")
        for key in ("replicas", "batch_size", "batch_tokens", "pack_batches", "max_new_tokens", "expert_shards"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_answer_tokens is not None and self.max_answer_tokens < 0:
            raise ValueError(f"max_answer_tokens must be >= 0, got {self.max_answer_tokens}")
        self.out = location(self.out)  # a local folder (made absolute) or a URI: s3://, gs://, hdfs://, file://
        if self.model is not None and is_uri(self.model):
            raise ValueError(f"--model {self.model}: the checkpoint must be a local folder that every node has (a "
                             "shared volume, or a copy on each node's disk made before the run); URIs are not read")
        if self.model is not None:
            self.model = str(Path(self.model).expanduser().resolve())

    def model_path(self) -> Path:
        """The checkpoint folder (builds the embedded tiny checkpoint on first use)."""
        if self.model is not None:
            p = Path(self.model)
            if not (p / "config.json").is_file():
                raise FileNotFoundError(f"--model {p}: no config.json there (expected a checkpoint folder)")
            return p
        from ernie_vl.tiny import default_model_path

        return default_model_path()

    def generation(self):
        """The job's `ernie_vl.generation.GenerationSettings` (EOS and pad come from the checkpoint on the replica)."""
        from ernie_vl.generation import GenerationSettings

        if not self.do_sample:  # greedy decoding does not depend on the sampling fields
            return GenerationSettings(max_new_tokens=self.max_new_tokens)
        return GenerationSettings(max_new_tokens=self.max_new_tokens, do_sample=True, temperature=self.temperature,
                                  top_p=self.top_p, top_k=self.top_k, seed=self.seed)

    def generation_record(self) -> dict:
        """The generation settings as plain values (fingerprinted; unchanged from earlier runs, so they resume)."""
        g = self.generation()
        return {
            "max_new_tokens": g.max_new_tokens,
            "do_sample": g.do_sample,
            "temperature": g.temperature if g.do_sample else None,
            "top_p": g.top_p if g.do_sample else None,
            "top_k": g.top_k if g.do_sample else None,
            "seed": g.seed if g.do_sample else None,
        }

    def thinking_for(self, benchmark) -> bool:
        """Whether `benchmark`'s prompts open a reasoning block (`enable_thinking`): `--thinking`/`--no-thinking`,
        else the benchmark's own default."""
        return self.thinking if self.thinking is not None else bool(getattr(benchmark, "thinking", False))

    def thinking_record(self, benchmark) -> dict | None:
        """The reasoning settings of `benchmark` as plain values (fingerprinted), None when it does not reason."""
        if not self.thinking_for(benchmark):
            return None
        return {"enable_thinking": True, "max_answer_tokens": self.max_answer_tokens}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class StageResources:
    """Ray resources and pool size of one actor stage (`concurrency` as Ray Data takes it)."""

    num_cpus: float
    num_gpus: float = 0.0
    concurrency: int | tuple[int, int] = 1

    def map_batches_kwargs(self) -> dict:
        """`num_cpus`, `num_gpus` and `compute` (an actor pool) for `Dataset.map_batches`."""
        from ray.data import ActorPoolStrategy

        c = self.concurrency
        pool = ActorPoolStrategy(size=c) if isinstance(c, int) else ActorPoolStrategy(min_size=c[0], max_size=c[1])
        kw = {"num_cpus": self.num_cpus, "compute": pool}
        if self.num_gpus:
            kw["num_gpus"] = self.num_gpus
        return kw


@dataclass
class ResourcePlan:
    preprocess: StageResources
    replica: StageResources
    score: StageResources
    device: str  # "cuda" or "cpu"
    torch_threads: int
    cluster_cpus: float
    cluster_gpus: float
    notes: list[str] = field(default_factory=list)


def plan_resources(cfg: EvalConfig, cluster: dict) -> ResourcePlan:
    """Size every stage from the cluster's total resources (`ray.cluster_resources()`).

    GPU clusters: a replica holds `num_gpus_per_replica` GPUs (× expert shards) and one CPU; preprocessing gets
    whole CPUs and scales up to what is left. CPU-only: the replicas, one preprocessing actor (0.5) and the scoring
    actor (0.25) share the CPUs fractionally, so nothing waits for a CPU that an idle actor holds.
    """
    cpus = float(cluster.get("CPU", 0.0))
    gpus = float(cluster.get("GPU", 0.0))
    if cpus <= 0:
        raise ClusterError(f"the Ray cluster reports no CPUs ({cluster}); preprocessing needs at least one")
    notes: list[str] = []
    want_gpus = cfg.num_gpus_per_replica
    if want_gpus is None:
        want_gpus = 1.0 if gpus >= 1 else 0.0
    per_replica_gpus = want_gpus * cfg.expert_shards
    if per_replica_gpus > 0:
        if per_replica_gpus * cfg.replicas > gpus + 1e-9:
            raise ClusterError(
                f"{cfg.replicas} replica(s) × {per_replica_gpus:g} GPU(s) need {per_replica_gpus * cfg.replicas:g} "
                f"GPUs but the cluster has {gpus:g}; lower --replicas"
            )
        score_cpus = 0.25
        replica_cpus = 1.0 if cpus - score_cpus - cfg.replicas >= 1 else max(0.1, (cpus - score_cpus - 0.5) / cfg.replicas)
        left = cpus - score_cpus - cfg.replicas * replica_cpus
        pre_cpus = 1.0 if left >= 1 else max(0.1, left)
        device = "cuda"
        threads = cfg.torch_threads or 1
    else:
        score_cpus = 0.25
        pre_cpus = 0.5
        replica_cpus = min(1.0, (cpus - score_cpus - pre_cpus) / cfg.replicas)
        if replica_cpus < 0.05:
            raise ClusterError(
                f"{cfg.replicas} CPU replica(s) do not fit on {cpus:g} CPUs next to preprocessing; lower --replicas"
            )
        left = cpus - score_cpus - cfg.replicas * replica_cpus
        device = "cpu"
        threads = cfg.torch_threads or max(1, (os.cpu_count() or 1) // cfg.replicas)
    max_pre = max(1, int(math.floor(left / pre_cpus + 1e-9)))
    if cfg.preprocess_actors is not None:
        max_pre = max(1, cfg.preprocess_actors)
    pre_pool: int | tuple[int, int] = (1, max_pre) if max_pre > 1 else 1
    return ResourcePlan(
        preprocess=StageResources(num_cpus=pre_cpus, concurrency=pre_pool),
        # an expert-sharded replica's GPUs belong to its rank actors (their placement group), not to the feeding actor
        replica=StageResources(num_cpus=replica_cpus, num_gpus=per_replica_gpus if cfg.expert_shards == 1 else 0.0,
                               concurrency=cfg.replicas),
        score=StageResources(num_cpus=score_cpus, concurrency=1),
        device=device,
        torch_threads=threads,
        cluster_cpus=cpus,
        cluster_gpus=gpus,
        notes=notes,
    )
