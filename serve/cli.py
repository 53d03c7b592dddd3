"""`ernie-vl serve`: run the OpenAI-compatible server locally (Ray Serve on a local or existing Ray cluster).

    ernie-vl serve                                   # embedded demo checkpoint, http://127.0.0.1:8000
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

from ernie_vl.demo_model import DEMO_MODEL_NAME, demo_model_path
from replicas.session import ensure_ray

from .settings import DEFAULT_API_KEY_ENV, DEFAULT_HOST, DEFAULT_PORT, ServeSettings, hash_api_key


def add_serve_command(subparsers) -> argparse.ArgumentParser:
    """Register `serve` on an argparse subparsers object (called by `ernie_vl_cli`)."""
    s = subparsers.add_parser("serve", help="serve the model behind an OpenAI-compatible HTTP API (Ray Serve)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--model", help="checkpoint folder (default: the embedded demo checkpoint, which answers questions "
                                   "about coloured shapes)")
    s.add_argument("--served-model-name", help=f"model id clients use (default: the folder name, or {DEMO_MODEL_NAME})")
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
        model=a.model or str(demo_model_path()),
        served_model_name=a.served_model_name or (None if a.model else DEMO_MODEL_NAME),
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


SERVE_SHUTDOWN_S = 5.0  # for Serve's graceful shutdown on stop
RAY_SHUTDOWN_S = 8.0  # then for ray.shutdown (a local instance: its GCS, raylet and agents)
KILL_WAIT_S = 2.0  # for processes sent SIGTERM to exit before they get SIGKILL


def start(settings: ServeSettings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, num_cpus: int | None = None):
    """Start or join Ray (`replicas.session.ensure_ray`) and Serve, deploy the application and return once its
    replicas are up."""
    from ray import serve

    from .app import APP_NAME, build_app

    ensure_ray(num_cpus)
    serve.start(http_options={"host": host, "port": port})
    return serve.run(build_app(settings.to_dict()), name=APP_NAME, route_prefix="/")


def stop(serve_timeout_s: float = SERVE_SHUTDOWN_S) -> None:
    """Shut Serve down, giving it `serve_timeout_s`, then Ray. A local Ray instance (no RAY_ADDRESS) goes away with
    every process it started, which this makes sure of: nothing of it answers afterwards.

    Bounded, and not left to Ray alone, because a SIGTERM sent to the whole process group (what systemd and
    container runtimes do) reaches Ray's GCS and raylet but not its workers (each in a process group of its own):
    Serve's controller then never confirms its graceful shutdown (Serve would wait 30 s for it) and the HTTP proxy
    and replicas kept answering until they noticed that their raylet was gone."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    _bounded(serve.shutdown, serve_timeout_s)
    if os.environ.get("RAY_ADDRESS"):  # a cluster this command joined: leave it running
        ray.shutdown()
        return
    ours = os.getpgid(0)
    started = _descendants(os.getpid())
    _terminate([p for p in started if _pgid(p) not in (None, ours)], grace_s=0)  # Serve's actors had their chance
    _bounded(ray.shutdown, RAY_SHUTDOWN_S)
    _terminate(started, grace_s=KILL_WAIT_S)  # whatever ray.shutdown left


def _bounded(fn, timeout_s: float) -> None:
    """Run `fn` in a daemon thread for at most `timeout_s` (a wedged shutdown must not hang the command)."""
    import threading

    t = threading.Thread(target=fn, name=f"ernie-vl-{fn.__name__}", daemon=True)
    t.start()
    t.join(timeout_s)


def _descendants(pid: int) -> list[int]:
    """Processes below `pid` (read from /proc; none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            children.setdefault(int(stat[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ... (None: gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pgid(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else int(stat[2])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited (its parent has not reaped it)


def _terminate(pids: list[int], grace_s: float) -> None:
    """SIGTERM `pids` and wait up to `grace_s` for them to exit (0: SIGKILL at once); SIGKILL those left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
        if sig == signal.SIGTERM and grace_s <= 0:
            continue
        for pid in pids:
            if _alive(pid):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        deadline = time.monotonic() + wait_s
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


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
        ensure_ray()
        # right after ray.init, whose native crash handler otherwise takes SIGTERM (and aborts the driver, leaving the
        # cluster to die on its own); SIGINT explicitly, since a process started in the background by a
        # non-interactive shell inherits it ignored
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        start(settings, a.host, a.port)
        print(f"ernie-vl serve: {settings.model_name()} at http://{a.host}:{a.port}/v1 (Ctrl-C to stop)", flush=True)
        while True:  # short sleeps: a process-wide signal may land on one of Ray's threads, and Python runs the
            time.sleep(0.5)  # handler only when the main thread next runs bytecode (a long sleep would not wake)
    except KeyboardInterrupt:
        print("ernie-vl serve: shutting down", flush=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the shutdown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        t0 = time.monotonic()
        stop()
        print(f"ernie-vl serve: stopped ({time.monotonic() - t0:.1f} s)", flush=True)
    return 0
