"""Load benchmark of the online server: requests/s and p50/p95 latency at 1, 8 and 32 concurrent clients.

    python -m serve.bench                       # starts the tiny-checkpoint server on 127.0.0.1, then measures
    python -m serve.bench --url http://127.0.0.1:8000 --model ernie-vl-tiny    # an already running server
    python -m serve.bench --concurrency 1 8 32 --requests 64 --max-tokens 16 --image-every 4 --json out.json

Traffic goes to loopback only (other hosts are refused) and is bounded: `--requests` per concurrency level
(after `--warmup` requests) and `--max-seconds` per level. Each client sends its next request as soon as the previous
one is answered (closed loop), so requests/s at concurrency c is what c eager users get. Every request is greedy,
with a distinct prompt; every `--image-every`-th one carries a small PNG as a data URL. Latency is measured at the
client, from sending the request to the last byte of the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import statistics
import sys
import time
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _png(seed: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), ((seed * 37) % 256, (seed * 91) % 256, 120)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _body(i: int, model: str, max_tokens: int, image_every: int) -> dict:
    content: list[dict] = [{"type": "text", "text": f"Request {i}: describe what you see in a few words."}]
    if image_every and i % image_every == 0:
        content.insert(0, {"type": "image_url", "image_url": {"url": _png(i)}})
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


async def run_level(url: str, model: str, concurrency: int, n: int, warmup: int, max_tokens: int,
                    image_every: int, max_seconds: float, headers: dict) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    tokens = 0
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        for i in range(warmup):
            await client.post("/v1/chat/completions", json=_body(-1 - i, model, max_tokens, image_every))
        deadline = time.monotonic() + max_seconds
        remaining = [n]

        async def worker():
            nonlocal tokens
            while remaining[0] > 0 and time.monotonic() < deadline:
                remaining[0] -= 1
                i = next(counter)
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/chat/completions", json=_body(i, model, max_tokens, image_every))
                    dt = time.perf_counter() - t0
                    if r.status_code == 200:
                        latencies.append(dt)
                        tokens += r.json()["usage"]["completion_tokens"]
                    else:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    ok = len(latencies)
    return {
        "concurrency": concurrency, "requests": ok, "errors": errors, "wall_s": round(wall, 3),
        "req_per_s": round(ok / wall, 2) if wall > 0 else 0.0,
        "completion_tokens_per_s": round(tokens / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(1000 * statistics.median(latencies), 1) if ok else None,
        "p95_ms": round(1000 * percentile(latencies, 95), 1) if ok else None,
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if ok else None,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_server(args) -> tuple[str, str]:
    """Start Ray + the application on loopback (tiny checkpoint by default); returns (base URL, model name)."""
    from .cli import start
    from .settings import ServeSettings

    settings = ServeSettings(model=args.model_dir, replicas=args.replicas, num_cpus=args.replica_cpus,
                             torch_threads=args.torch_threads, max_batch_size=args.max_batch_size,
                             batch_wait_timeout_s=args.batch_wait_ms / 1000, max_ongoing_requests=64,
                             max_tokens_limit=max(64, args.max_tokens))
    port = _free_port()
    start(settings, "127.0.0.1", port, num_cpus=args.num_cpus)
    return f"http://127.0.0.1:{port}", settings.model_name()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an already running server (loopback only); default: start one here")
    p.add_argument("--model", default=None, help="model id to send (default: the started server's)")
    p.add_argument("--api-key", default=os.environ.get("ERNIE_VL_API_KEY"))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=128, help="measured requests per concurrency level")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--image-every", type=int, default=4, help="every k-th request carries an image (0: none)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="time cap per level")
    p.add_argument("--json", help="also write the results here")
    g = p.add_argument_group("local server (when --url is not given)")
    g.add_argument("--model-dir", default=None, help="checkpoint folder (default: the embedded tiny checkpoint)")
    g.add_argument("--replicas", type=int, default=1)
    g.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs given to the local Ray")
    g.add_argument("--replica-cpus", type=float, default=1.0)
    g.add_argument("--torch-threads", type=int, default=0)
    g.add_argument("--max-batch-size", type=int, default=32)
    g.add_argument("--batch-wait-ms", type=float, default=10.0)
    args = p.parse_args(argv)

    started = args.url is None
    if started:
        url, model = start_local_server(args)
    else:
        host = urlsplit(args.url).hostname or ""
        if host not in LOOPBACK:
            print(f"serve.bench: refusing to load {host!r}: the benchmark only targets loopback", file=sys.stderr)
            return 2
        url, model = args.url.rstrip("/"), args.model or "ernie-vl-tiny"
    model = args.model or model
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    results = []
    try:
        for c in args.concurrency:
            r = asyncio.run(run_level(url, model, c, args.requests, args.warmup, args.max_tokens, args.image_every,
                                      args.max_seconds, headers))
            results.append(r)
            print(f"concurrency {c:>3}: {r['req_per_s']:>7.2f} req/s  p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms  "
                  f"({r['requests']} ok, errors {r['errors'] or 'none'}, {r['completion_tokens_per_s']} tok/s)",
                  flush=True)
    finally:
        if started:
            from ray import serve

            serve.shutdown()
    report = {"url": url, "model": model, "max_tokens": args.max_tokens, "image_every": args.image_every,
              "cpu_count": os.cpu_count(), "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if all(not r["errors"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
