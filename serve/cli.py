"""`ernie-vl serve`: run the OpenAI-compatible server locally (Ray Serve on a local or existing Ray cluster).

    ernie-vl serve                                   # embedded tiny checkpoint, http://127.0.0.1:8000
    ernie-vl serve --model /ckpt/ERNIE-4.5-VL-28B-A3B --replicas 2 --num-gpus 1
    ernie-vl serve --model /ckpt/ERNIE-4.5-VL-28B-A3B --expert-shards 2     # one replica over 2 GPUs
    ERNIE_VL_API_KEY=secret ernie-vl serve --require-api-key --media-root /data/images

The command blocks until interrupted (Ctrl-C), then shuts the application down. For clusters use
`serve run serve/config.yaml` (see that file).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from .settings import DEFAULT_API_KEY_ENV, DEFAULT_HOST, DEFAULT_PORT, ServeSettings, hash_api_key


def add_serve_command(subparsers) -> argparse.ArgumentParser:
    """Register `serve` on an argparse subparsers object (called by `ernie_vl_cli`)."""
    s = subparsers.add_parser("serve", help="serve the model behind an OpenAI-compatible HTTP API (Ray Serve)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--model", help="checkpoint folder (default: the embedded tiny checkpoint)")
    s.add_argument("--served-model-name", help="model id clients use (default: the folder name, or ernie-vl-tiny)")
    s.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST}; use "
                                                        "0.0.0.0 only behind a firewall and with an API key)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})")
    s.add_argument("--replicas", type=int, default=1, help="model replicas (the minimum when autoscaling)")
    s.add_argument("--max-replicas", type=int, default=0, help="autoscale up to this many replicas (default: off)")
    s.add_argument("--expert-shards", type=int, default=1, metavar="K",
                   help="spread each replica's routed experts over a gang of K rank actors (one GPU each on GPU "
                        "nodes, all on one node); default 1: the replica holds the whole model")
    s.add_argument("--expert-placement", default="even", choices=["even", "modality-aware"],
                   help="which rank holds which experts when K > 1 (modality-aware: vision experts on the last rank)")
    s.add_argument("--shard-num-cpus", type=float, default=None,
                   help="CPUs per rank actor when K > 1 (default: 1 with GPUs, else 0.25)")
    s.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica (fractions allowed)")
    s.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs per replica, or per rank actor when --expert-shards K > 1 (default: 1 if CUDA is "
                        "visible)")
    s.add_argument("--dtype", default=None, help="model dtype (default: bfloat16 on GPU, checkpoint dtype on CPU)")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda if the replica has a GPU)")
    s.add_argument("--torch-threads", type=int, default=0, help="intra-op threads per replica (0: torch default)")
    s.add_argument("--max-batch-size", type=int, default=32)
    s.add_argument("--max-batch-tokens", type=int, default=16384, help="padded prompt+new tokens per batch")
    s.add_argument("--no-reuse", action="store_true",
                   help="compute every prompt in full (default: continue from stored prompts sharing a prefix)")
    s.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits to fill up")
    s.add_argument("--max-ongoing-requests", type=int, default=64, help="concurrent requests per replica")
    s.add_argument("--max-queued-requests", type=int, default=256,
                   help="requests waiting in front of the replicas before 429")
    s.add_argument("--max-tokens-limit", type=int, default=None,
                   help="largest max_tokens a request may ask for (default: what the model's context holds)")
    s.add_argument("--max-prompt-tokens", type=int, default=8192)
    s.add_argument("--media-root", action="append", default=[], metavar="DIR",
                   help="folder local image/video paths may be read from (repeatable; default: none)")
    s.add_argument("--allow-url-prefix", action="append", default=[], metavar="PREFIX",
                   help="http(s) URL prefix media may be fetched from (repeatable; default: no remote URLs)")
    s.add_argument("--require-api-key", action="store_true",
                   help=f"require 'Authorization: Bearer <key>' with the key from ${DEFAULT_API_KEY_ENV}")
    s.add_argument("--max-request-mb", type=float, default=32.0, help="HTTP body limit in MiB")
    s.add_argument("--max-media-mb", type=float, default=16.0, help="limit per image/video in MiB")
    s.set_defaults(func=run_serve)
    return s


def settings_from_args(a: argparse.Namespace) -> ServeSettings:
    """The namespace -> ServeSettings (raises ValueError with a clear message)."""
    key_digest = None
    if a.require_api_key:
        key = os.environ.get(DEFAULT_API_KEY_ENV)
        if not key:
            raise ValueError(f"--require-api-key: set the key in the {DEFAULT_API_KEY_ENV} environment variable")
        key_digest = hash_api_key(key)
    num_gpus = a.num_gpus
    if num_gpus is None:
        try:
            import torch

            num_gpus = 1.0 if torch.cuda.is_available() and a.device != "cpu" else 0.0
        except ImportError:
            num_gpus = 0.0
    return ServeSettings(
        model=a.model,
        served_model_name=a.served_model_name,
        dtype=a.dtype,
        device=a.device,
        torch_threads=a.torch_threads,
        expert_shards=a.expert_shards,
        expert_placement=a.expert_placement,
        shard_num_cpus=a.shard_num_cpus,
        max_tokens_limit=a.max_tokens_limit,
        default_max_tokens=min(64, a.max_tokens_limit or 64),
        max_prompt_tokens=a.max_prompt_tokens,
        max_batch_size=a.max_batch_size,
        max_batch_tokens=a.max_batch_tokens,
        reuse=not a.no_reuse,
        batch_wait_timeout_s=a.batch_wait_ms / 1000.0,
        api_key_sha256=key_digest,
        media_roots=list(a.media_root),
        allowed_url_prefixes=list(a.allow_url_prefix),
        max_request_bytes=int(a.max_request_mb * (1 << 20)),
        max_media_bytes=int(a.max_media_mb * (1 << 20)),
        replicas=a.replicas,
        max_replicas=a.max_replicas,
        num_cpus=a.num_cpus,
        num_gpus=num_gpus,
        max_ongoing_requests=a.max_ongoing_requests,
        max_queued_requests_serve=a.max_queued_requests,
    )


def start(settings: ServeSettings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, num_cpus: int | None = None):
    """Start Ray (a local instance unless RAY_ADDRESS names a cluster) and Serve, deploy the application and return
    once its replicas are up."""
    import ray
    from ray import serve

    from ernie_vl.worker_env import worker_env

    from .app import APP_NAME, build_app

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": worker_env()})
    serve.start(http_options={"host": host, "port": port})
    return serve.run(build_app(settings.to_dict()), name=APP_NAME, route_prefix="/")


def run_serve(a: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(a)
    except (ValueError, NotImplementedError) as e:
        print(f"ernie-vl serve: error: {e}", file=sys.stderr)
        return 2
    if a.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key_sha256 is None:
        print(f"ernie-vl serve: warning: listening on {a.host} without an API key (--require-api-key)",
              file=sys.stderr)
    def _interrupt(signum, frame):  # SIGTERM (e.g. from a process manager) shuts down like Ctrl-C
        raise KeyboardInterrupt

    try:
        start(settings, a.host, a.port)
        # after ray.init, whose native crash handler otherwise takes SIGTERM (and aborts); SIGINT explicitly, since a
        # process started in the background by a non-interactive shell inherits it ignored
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(f"ernie-vl serve: {settings.model_name()} at http://{a.host}:{a.port}/v1 (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("ernie-vl serve: shutting down", flush=True)
    finally:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
    return 0
