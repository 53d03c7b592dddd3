"""Server settings: one plain dataclass shared by the CLI, the Serve config YAML (`args:`) and the tests.

Everything a replica needs to build itself travels in this dataclass (as a plain dict, so it survives Ray's
serialisation and reads naturally in YAML). Secrets do not: the API key is stored as its SHA-256 digest
(`api_key_sha256`) or read by the replica from an environment variable (`api_key_env`), so neither the Ray
dashboard nor a config file ever shows it.

Limits are enforced in this order (each before the more expensive step that follows it):
request bytes -> JSON -> schema -> media bytes -> image pixels / video frames (from headers, before decoding)
-> prompt tokens (after the processor, before generation) -> queue admission.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_API_KEY_ENV = "ERNIE_VL_API_KEY"


EXPERT_PLACEMENTS = ("even", "modality-aware")


def check_expert_shards(expert_shards) -> None:
    """`expert_shards` must be a positive integer (1: the replica holds the whole model; K > 1: a gang of K ranks)."""
    if isinstance(expert_shards, bool) or not isinstance(expert_shards, int) or expert_shards < 1:
        raise ValueError(f"expert_shards must be a positive integer (1 = no expert sharding), got {expert_shards!r}")


def check_expert_shards_fit(expert_shards: int, model_path) -> None:
    """K must not exceed the routed experts per pool of the checkpoint (checked where its config is readable)."""
    if expert_shards <= 1:
        return
    try:
        from ernie_vl.config import ModelConfig

        n_experts = ModelConfig.from_file(str(model_path)).text.moe_num_experts
    except (OSError, ValueError, KeyError):  # not on this node (a cluster path): the replica checks it again
        return
    if expert_shards > n_experts:
        raise ValueError(f"expert_shards={expert_shards}: the checkpoint has {n_experts} routed experts per pool, so "
                         f"at most {n_experts} shards")


def hash_api_key(key: str) -> str:
    """Hex SHA-256 of an API key: what the settings carry instead of the key itself."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class ServeSettings:
    """Settings of one ERNIE-VL serving application (all replicas share them).

    Model:
        model: checkpoint folder; None = the embedded tiny checkpoint.
        served_model_name: the `model` id clients send and /v1/models lists (default: the folder name,
            "ernie-vl-tiny" for the embedded checkpoint).
        dtype, device: passed to `ernie_vl.load_model` (None = checkpoint dtype / cuda if available else cpu).
        torch_threads: intra-op threads per replica (0 = leave torch's default).
        expert_shards: K, the ranks one replica's routed experts are spread over. 1: the Serve replica holds the whole
            model. K > 1: the Serve replica owns a gang of K rank actors (`replicas.ExpertShardedReplica`, one
            placement group) that hold the model, each with 1/K of the routed experts; see runtime.GangRuntime.
        expert_placement: which rank owns which expert when K > 1: "even" or "modality-aware".
        shard_num_cpus: CPUs per rank actor when K > 1 (None: 1 when the ranks have GPUs, else 0.25).
    Generation:
        default_max_tokens: completion budget when a request gives no max_tokens.
        max_tokens_limit: the largest max_tokens a request may ask for (None: whatever the model's context holds
            after the prompt, as vLLM; a request beyond it gets 400 context_length_exceeded). A request's prompt plus
            max_tokens is reserved in the KV cache while it runs (see max_batch_tokens).
        max_prompt_tokens: prompt length limit (text + image + video tokens); the model's context caps it too.
    Batching and backpressure (per replica):
        max_batch_size, max_batch_tokens: a batch closes at this many requests (choices: `n` counts n) or padded
            (prompt + max_tokens) tokens; a request beyond max_batch_tokens alone still runs, alone.
        batch_wait_timeout_s: how long the first request of a batch waits for company.
        max_queued_requests: requests admitted to the replica's queue beyond that are answered 429.
        request_timeout_s: a request still unanswered after this many seconds gets 503 (never a hang).
        preprocess_workers: threads that fetch media and run the processor.
        reuse: keep the keys and values of recent prompts (`prefix_cache_bytes` per replica) and continue a request
            from the longest stored prompt sharing at least 32 tokens with it, media included (a second question on
            the same image, the next turn of a chat, a repeated system prompt); requests admitted together share a
            common prefix too. The answer is the one computed without reuse; `usage.prompt_tokens_details.
            cached_tokens` says how many prompt tokens were not computed again. K = 1 replicas only.
    Security:
        api_key_sha256 / api_key_env: require `Authorization: Bearer <key>` when either is set.
        media_roots: folders local files (paths and file:// URLs) may be read from; empty = no local files.
        allowed_url_prefixes: http(s) URL prefixes that may be fetched (e.g. "https://images.example.com/");
            empty = remote URLs are refused (no SSRF).
        max_request_bytes: HTTP body limit. max_media_bytes: one image/video (decoded data URL, file or download).
        max_image_pixels: width*height read from the image header, checked before decoding: a decompression-bomb
            guard (default Pillow's MAX_IMAGE_PIXELS, 89,478,485), not a photo-size limit (the processor resizes).
        max_video_frames, max_video_pixels, max_video_seconds: read from the container, checked before decoding.
        max_media_items: images + videos per request. url_timeout_s: remote fetch timeout.
    Deployment (used by the CLI/`build_app`; a Serve config's `deployments:` section overrides them):
        replicas (fixed count, or the minimum when autoscaling), max_replicas (> replicas turns autoscaling on),
        num_cpus, num_gpus (per replica; with expert_shards K > 1 `num_gpus` is per rank actor, the Serve replica
        actor itself then holds no GPU and `num_cpus` is its HTTP/preprocessing share), max_ongoing_requests (per
        replica), max_queued_requests_serve (requests Serve holds in front of the replicas before answering 429).
    """

    model: str | None = None
    served_model_name: str | None = None
    dtype: str | None = None
    device: str | None = None
    torch_threads: int = 0
    expert_shards: int = 1
    expert_placement: str = "even"
    shard_num_cpus: float | None = None

    default_max_tokens: int = 64
    max_tokens_limit: int | None = None
    max_prompt_tokens: int = 8192

    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    batch_wait_timeout_s: float = 0.01
    max_queued_requests: int = 256
    request_timeout_s: float = 300.0
    preprocess_workers: int = 2
    reuse: bool = True
    prefix_cache_bytes: int = 1 << 30

    api_key_sha256: str | None = None
    api_key_env: str | None = None
    media_roots: list[str] = field(default_factory=list)
    allowed_url_prefixes: list[str] = field(default_factory=list)
    max_request_bytes: int = 32 << 20
    max_media_bytes: int = 16 << 20
    max_image_pixels: int = 89_478_485
    max_video_frames: int = 4096
    max_video_pixels: int = 1920 * 1080
    max_video_seconds: float = 600.0
    max_media_items: int = 16
    url_timeout_s: float = 10.0

    replicas: int = 1
    max_replicas: int = 0
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_ongoing_requests: int = 64
    max_queued_requests_serve: int = 256

    def __post_init__(self):
        check_expert_shards(self.expert_shards)
        if self.expert_placement not in EXPERT_PLACEMENTS:
            raise ValueError(f"expert_placement must be one of {list(EXPERT_PLACEMENTS)}, got {self.expert_placement!r}")
        if self.shard_num_cpus is not None and not float(self.shard_num_cpus) > 0:
            raise ValueError(f"shard_num_cpus must be > 0, got {self.shard_num_cpus!r}")
        positive = ("default_max_tokens", "max_prompt_tokens", "max_batch_size",
                    "max_batch_tokens", "max_queued_requests", "preprocess_workers", "max_request_bytes",
                    "max_media_bytes", "max_image_pixels", "max_video_frames", "max_video_pixels", "replicas",
                    "max_ongoing_requests")
        bad = {k: v for k in positive if not (isinstance(v := getattr(self, k), int) and v > 0)}
        if bad:
            raise ValueError(f"these settings must be positive integers: {bad}")
        if self.max_replicas and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas={self.max_replicas} is below replicas={self.replicas}")
        if self.max_tokens_limit is not None and not (isinstance(self.max_tokens_limit, int)
                                                      and self.max_tokens_limit > 0):
            raise ValueError(f"max_tokens_limit must be a positive integer or None, got {self.max_tokens_limit!r}")
        if self.max_tokens_limit is not None and self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"default_max_tokens={self.default_max_tokens} exceeds max_tokens_limit={self.max_tokens_limit}"
            )
        for k in ("batch_wait_timeout_s", "request_timeout_s", "url_timeout_s", "max_video_seconds"):
            if float(getattr(self, k)) < 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")
        for prefix in self.allowed_url_prefixes:
            if not prefix.startswith(("http://", "https://")) or prefix.count("/") < 3:
                raise ValueError(
                    f"allowed_url_prefixes entries must look like 'https://host[:port]/path/', got {prefix!r} "
                    "(the host part must end with '/', so 'https://a.com' cannot match 'https://a.com.evil.net')"
                )
        self.media_roots = [str(Path(r).expanduser().resolve()) for r in self.media_roots]

    @classmethod
    def from_dict(cls, args: dict[str, Any] | None) -> "ServeSettings":
        """From a plain dict (Serve config `args:`); unknown keys are an error that lists the valid ones."""
        args = dict(args or {})
        if "api_key" in args:  # a plain key would show in the Ray dashboard and in config files
            raise ValueError("pass api_key_sha256 or api_key_env in the settings, not the key itself")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - names)
        if unknown:
            raise ValueError(f"unknown serve settings {unknown}; valid: {sorted(names)}")
        return cls(**args)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model_path(self) -> Path:
        """The checkpoint folder (building the embedded tiny checkpoint on first use)."""
        if self.model:
            return Path(self.model).expanduser().resolve()
        from ernie_vl.tiny import default_model_path

        return default_model_path()

    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        return Path(self.model).expanduser().resolve().name if self.model else "ernie-vl-tiny"

    def api_key_digest(self) -> str | None:
        """The digest requests are checked against, or None when no key is required."""
        if self.api_key_sha256:
            return self.api_key_sha256.lower()
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ValueError(f"api_key_env={self.api_key_env!r} is set but that environment variable is empty")
            return hash_api_key(key)
        return None
