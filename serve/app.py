"""The Ray Serve application: an OpenAI-compatible chat API in front of the ERNIE-VL processor and engine.

Routes (FastAPI ingress; every replica holds the model, so there is no extra hop between HTTP and generation — with
`expert_shards` K > 1 the replica instead feeds a gang of K rank actors that hold it, see sharded.py):

    POST /v1/chat/completions   OpenAI chat completions, JSON or server-sent events (`stream: true`)
    GET  /v1/models             the served model
    GET  /v1/models/{model}
    GET  /health                200 {"status": "ok"} while the replica can serve (no API key needed)

Request path: API key -> body read with a byte cap -> JSON -> schema (schemas.py) -> model name -> media, processor
and limits (prepare.py, in a thread pool) -> replica queue (batching.py; full -> 429) -> generation (`ernie_vl.slots`:
a continuous batch that requests' choices join between decode steps, in the decode thread; or, K > 1, gang steps in
sharded.py) -> answer (choice.py: text, reasoning split, log-probabilities). Every refusal is an OpenAI-shaped error with a message written by this package; an unexpected
exception is logged with its request id and answered with a generic 500 that carries only that id.

Backpressure has two layers: Serve's `max_ongoing_requests` per replica with `max_queued_requests` in front of
the replicas (beyond that Serve answers 429 itself, with Retry-After), and the replica's own bounded queue.
A request still unanswered after `request_timeout_s` gets 503; a client that goes away frees its batch row.

Entry points: `build_app(args)` (the Serve application builder, used by `serve run serve/config.yaml` and by the
`ernie-vl serve` command) and `ErnieVLDeployment`.
"""

# NOTE: no `from __future__ import annotations` here: FastAPI must see real annotations (`request: Request`)
# on the ingress methods, and Serve wraps them in a way that hides the module globals string annotations need.
import asyncio
import json
import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import QueueFull
from .errors import APIError, bad_request, internal, overloaded, unavailable
from .schemas import (AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ChoiceLogprobs,
                      ChunkChoice, Delta, ModelCard, ModelList, error_event, new_completion_id, now, parse_request,
                      sse, usage)
from .security import check_api_key, read_body
from .settings import ServeSettings, check_expert_shards_fit

log = logging.getLogger("ernie_vl.serve")

DEPLOYMENT_NAME = "ErnieVL"
APP_NAME = "ernie-vl"

try:  # Ray >= 2.5x: answer Serve's own backpressure rejections with 429 + Retry-After (OpenAI clients retry those)
    from ray.serve.config import BackpressureConfig

    _BACKPRESSURE = {"backpressure_config": BackpressureConfig(status_code=429, retry_after_s=1)}
except ImportError:  # older Serve answers them with 503, which clients also retry
    _BACKPRESSURE = {}

api = FastAPI(title="ERNIE-VL OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers or None)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown routes and wrong methods, in the OpenAI error shape too."""
    msg = {404: f"no route {request.url.path}", 405: f"method {request.method} is not allowed on {request.url.path}"}
    return error_response(APIError(exc.status_code, msg.get(exc.status_code, str(exc.detail)),
                                   "invalid_request_error", None, "not_found" if exc.status_code == 404 else None))


@serve.deployment(
    name=DEPLOYMENT_NAME,
    max_ongoing_requests=64,
    max_queued_requests=256,
    **_BACKPRESSURE,
    health_check_period_s=10,
    health_check_timeout_s=60,  # a long prefill must not look like a dead replica (ray-project/ray#54070)
    graceful_shutdown_timeout_s=20,
    ray_actor_options={"num_cpus": 1},
)
@serve.ingress(api)
class ErnieVLDeployment:
    """One replica: the model runtime plus the HTTP routes."""

    def __init__(self, settings: dict):
        from .runtime import make_runtime

        logging.basicConfig(level=logging.INFO)
        self.settings = ServeSettings.from_dict(settings)
        self.key_digest = self.settings.api_key_digest()  # a missing key fails the replica before the model loads
        self.runtime = make_runtime(self.settings)  # the model here, or an expert-sharded gang (expert_shards > 1)
        self.model_name = self.runtime.model_name
        self.created = now()

    def __del__(self):  # Serve calls this when it stops the replica
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.close()

    async def check_health(self) -> None:
        """Serve's health probe: a replica whose decode thread died (or whose gang cannot be rebuilt) is replaced."""
        if not self.runtime.healthy():
            raise RuntimeError("the decode thread of this replica has stopped or its expert-sharded gang is down")

    async def expert_shards_status(self) -> dict:
        """Not an HTTP route (Serve handle calls only): the gang's restarts and rank actors when expert_shards > 1."""
        status = getattr(self.runtime, "status", None)
        return status() if status is not None else {"expert_shards": 1}

    # ------------------------------------------------------------------------------------------- routes
    @api.get("/health")
    async def health(self) -> JSONResponse:
        if not self.runtime.healthy():
            return error_response(unavailable("the decode thread of this replica has stopped"))
        return JSONResponse({"status": "ok"})

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        try:
            check_api_key(request.headers.get("authorization"), self.key_digest)
        except APIError as e:
            return error_response(e)
        return JSONResponse(ModelList(data=[self._card()]).model_dump())

    @api.get("/v1/models/{model:path}")
    async def model(self, model: str, request: Request) -> JSONResponse:
        try:
            check_api_key(request.headers.get("authorization"), self.key_digest)
            self._check_model(model)
        except APIError as e:
            return error_response(e)
        return JSONResponse(self._card().model_dump())

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        rid = new_completion_id()
        try:
            check_api_key(request.headers.get("authorization"), self.key_digest)
            body = await read_body(request, self.settings.max_request_bytes)
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                reason = ""
                if isinstance(e, json.JSONDecodeError):
                    reason = f" ({e.msg} at line {e.lineno} column {e.colno})"
                raise bad_request(f"the request body is not valid JSON{reason}", code="invalid_json") from None
            req = parse_request(data)
            self._check_model(req.model)
            job = await self.runtime.prepare(req)
            try:
                self.runtime.submit(job)
            except QueueFull as e:
                raise overloaded(f"the server is busy: {e}; retry later") from None
        except APIError as e:
            return error_response(e)
        except Exception:  # noqa: BLE001 - never leak a traceback to the client
            log.exception("request %s failed before generation", rid)
            return error_response(internal(rid))
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(self._events(job, rid, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await self._answer(job, rid)

    # ------------------------------------------------------------------------------------------- helpers
    def _card(self) -> ModelCard:
        return ModelCard(id=self.model_name, created=self.created)

    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {self.model_name!r}",
                           "invalid_request_error", "model", "model_not_found")

    def _deadline(self, job) -> float:
        return job.enqueued_at + self.settings.request_timeout_s

    async def _next_event(self, job) -> tuple:
        remaining = self._deadline(job) - time.monotonic()
        if remaining <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(job.events.get(), remaining)

    async def _answer(self, job, rid: str) -> JSONResponse:
        finished = False
        done: dict[int, tuple] = {}
        try:
            while True:
                event = await self._next_event(job)
                if event[0] == "done":
                    done[event[1]] = event[2:]
                    if len(done) < len(job.choices):
                        continue
                    finished = True
                    choices = []
                    for row in job.choices:
                        finish_reason, _ = done[row.index]
                        reasoning, content = row.answer()
                        logprobs = None if row.logprobs is None else ChoiceLogprobs(content=row.logprobs)
                        choices.append(Choice(index=row.index, finish_reason=finish_reason, logprobs=logprobs,
                                              message=AssistantMessage(content=content, reasoning=reasoning,
                                                                       reasoning_content=reasoning)))
                    n_tokens = sum(n for _, n in done.values())
                    return JSONResponse(ChatCompletion(
                        id=rid, created=now(), model=self.model_name, choices=choices,
                        usage=usage(job.prompt_tokens, n_tokens, job.reused_prompt_tokens),
                    ).model_dump())
                if event[0] == "error":
                    finished = True
                    log.error("request %s failed during generation: %r", rid, event[1])
                    if isinstance(event[1], APIError):  # e.g. 503 when an expert-sharded gang failed its retry
                        return error_response(event[1])
                    return error_response(internal(rid))
        except asyncio.TimeoutError:
            return error_response(unavailable(
                f"the request was not answered within {self.settings.request_timeout_s:g} s; the server is "
                "overloaded, retry later"))
        finally:
            if not finished:
                job.cancelled = True  # timed out or the client went away: free the batch rows

    async def _events(self, job, rid: str, include_usage: bool):
        """Server-sent events: a role chunk per choice, deltas (reasoning and/or content, with their log-probability
        entries), a finish chunk per choice, optionally usage, then [DONE]."""
        created = now()

        def chunk(index: int, delta: Delta, finish_reason=None, logprobs=None) -> ChatCompletionChunk:
            lp = None if logprobs is None else ChoiceLogprobs(content=logprobs)
            return ChatCompletionChunk(id=rid, created=created, model=self.model_name, choices=[
                ChunkChoice(index=index, delta=delta, finish_reason=finish_reason, logprobs=lp)])

        finished = False
        done: dict[int, int] = {}
        try:
            for row in job.choices:
                yield sse(chunk(row.index, Delta(role="assistant", content="")))
            while True:
                event = await self._next_event(job)
                if event[0] == "delta":
                    _, index, reasoning, content, logprobs = event
                    if reasoning:
                        yield sse(chunk(index, Delta(reasoning=reasoning, reasoning_content=reasoning), None,
                                        logprobs))
                        logprobs = None if logprobs is None else []  # sent with the reasoning piece
                    if content or not reasoning:
                        yield sse(chunk(index, Delta(content=content), None, logprobs))
                elif event[0] == "done":
                    _, index, finish_reason, n_tokens = event
                    done[index] = n_tokens
                    yield sse(chunk(index, Delta(), finish_reason))
                    if len(done) < len(job.choices):
                        continue
                    finished = True
                    if include_usage:
                        yield sse(ChatCompletionChunk(id=rid, created=created, model=self.model_name, choices=[],
                                                      usage=usage(job.prompt_tokens, sum(done.values()),
                                                                  job.reused_prompt_tokens)))
                    yield sse("[DONE]")
                    return
                else:
                    finished = True
                    log.error("streamed request %s failed during generation: %r", rid, event[1])
                    yield error_event(event[1] if isinstance(event[1], APIError) else internal(rid))
                    return
        except asyncio.TimeoutError:
            yield error_event(unavailable(f"the request was not finished within "
                                          f"{self.settings.request_timeout_s:g} s; retry later"))
        finally:
            if not finished:
                job.cancelled = True


def deployment_options(settings: ServeSettings) -> dict:
    """Serve options derived from the settings (a Serve config's `deployments:` entry overrides them)."""
    # with expert_shards > 1 the GPUs belong to the gang's rank actors (their placement group), not to this actor
    gpus = settings.num_gpus if settings.expert_shards == 1 else 0.0
    opts = {
        "max_ongoing_requests": settings.max_ongoing_requests,
        "max_queued_requests": settings.max_queued_requests_serve,
        "ray_actor_options": {"num_cpus": settings.num_cpus, "num_gpus": gpus},
    }
    if settings.max_replicas > settings.replicas:
        opts["autoscaling_config"] = {
            "min_replicas": settings.replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": max(1, settings.max_batch_size // 2),
        }
    else:
        opts["num_replicas"] = settings.replicas
    return opts


def build_app(args: dict | None = None):
    """Serve application builder: `args` are `ServeSettings` fields (the `args:` mapping of a Serve config)."""
    settings = ServeSettings.from_dict(args)
    if settings.expert_shards > 1 and (settings.model is None or Path(settings.model).expanduser().is_dir()):
        check_expert_shards_fit(settings.expert_shards, settings.model_path())
    return ErnieVLDeployment.options(**deployment_options(settings)).bind(settings.to_dict())
