"""OpenAI chat-completions request and response models (pydantic v2), the subset this server implements.

Request: ``model``, ``messages`` (roles system/developer/user/assistant; content a string or a list of ``text``,
``image_url`` and ``video_url`` parts; an assistant turn may carry its reasoning back as ``reasoning`` or
``reasoning_content``), ``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``top_k`` (extension,
as vLLM), ``seed``, ``stop`` (string or up to 4 strings), ``n``, ``logprobs``/``top_logprobs``, ``presence_penalty``/
``frequency_penalty``, ``repetition_penalty`` (extension, as vLLM), ``chat_template_kwargs`` (as vLLM: template
variables, e.g. ``{"enable_thinking": true}``), ``stream``, ``stream_options.include_usage``. Unknown fields are
ignored, as OpenAI-compatible servers do; fields this server does not implement (tools, response_format,
logit_bias, ...) are refused when set to a non-default value, so a client never silently gets something other than
what it asked for. Types are strict: ``"max_tokens": "10"`` is an error.

Responses: ``chat.completion`` (with ``usage``), ``chat.completion.chunk`` for server-sent events, ``list`` of
``model`` objects. Field names and nesting follow the OpenAI API reference so the ``openai`` client parses them; a
thinking model's reasoning is returned in ``message.reasoning`` and ``message.reasoning_content`` (streamed:
``delta.reasoning`` / ``delta.reasoning_content``), both names being read by clients (vLLM's current and former one).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import APIError, bad_request

_STRICT = ConfigDict(strict=True, extra="ignore")
# Template variables the server sets itself, and the processor's own arguments (`Processor.prepare` takes template
# variables as keywords beside them): a request's chat_template_kwargs may not set these.
RESERVED_TEMPLATE_VARIABLES = frozenset({"messages", "tools", "documents", "add_generation_prompt",
                                         "bos_token", "eos_token", "unk_token", "pad_token", "cls_token",
                                         "sep_token", "mask_token", "self", "source", "with_metadata",
                                         "video_sampling", "special_tokens", "template"})


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class MediaURL(BaseModel):
    model_config = _STRICT
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None  # accepted for compatibility; the processor decides size


class ImagePart(BaseModel):
    model_config = _STRICT
    type: Literal["image_url"]
    image_url: MediaURL


class VideoPart(BaseModel):
    model_config = _STRICT
    type: Literal["video_url"]
    video_url: MediaURL


ContentPart = Annotated[Union[TextPart, ImagePart, VideoPart], Field(discriminator="type")]
PART_TYPES = ("text", "image_url", "video_url")


class Message(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    reasoning: str | None = None  # an earlier assistant turn's reasoning (either name; vLLM's and its former one)
    reasoning_content: str | None = None


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = _STRICT
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    chat_template_kwargs: dict[str, Any] | None = None
    # Known OpenAI fields this server does not implement: refused unless left at their default.
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, Any] | None = None

    def check_supported(self) -> None:
        """Refuse requests that ask for something this server cannot do (instead of ignoring it)."""
        unsupported = {
            "tools": bool(self.tools),
            "tool_choice": self.tool_choice not in (None, "none"),
            "functions": bool(self.functions),
            "response_format": self.response_format not in (None, {"type": "text"}),
            "logit_bias": bool(self.logit_bias),
        }
        for name, is_set in unsupported.items():
            if is_set:
                raise bad_request(f"{name}: not supported by this server; leave it unset", name)
        if self.top_logprobs and not self.logprobs:
            raise bad_request("top_logprobs: needs logprobs=true", "top_logprobs")
        for i, msg in enumerate(self.messages):
            if msg.role != "assistant" and (msg.reasoning is not None or msg.reasoning_content is not None):
                raise bad_request(f"messages[{i}]: only assistant messages carry reasoning", f"messages[{i}]")
        kwargs = self.chat_template_kwargs or {}
        reserved = sorted(set(kwargs) & RESERVED_TEMPLATE_VARIABLES)
        if reserved:
            raise bad_request(f"chat_template_kwargs: {', '.join(reserved)} cannot be set by a request",
                              "chat_template_kwargs")
        if "enable_thinking" in kwargs and not isinstance(kwargs["enable_thinking"], bool):
            raise bad_request("chat_template_kwargs.enable_thinking: must be true or false",
                              "chat_template_kwargs.enable_thinking")
        stops = self.stop_list()
        if len(stops) > 4:
            raise bad_request(f"stop: {len(stops)} strings given; at most 4 are allowed", "stop")
        if any(not s for s in stops):
            raise bad_request("stop: stop strings must be non-empty", "stop")
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise bad_request("max_tokens: max_tokens and max_completion_tokens disagree; send one of them",
                              "max_tokens")

    def template_kwargs(self) -> dict[str, Any]:
        """Variables for the chat template (as vLLM passes `chat_template_kwargs`; a key the template does not use
        changes nothing)."""
        return dict(self.chat_template_kwargs or {})

    def thinking(self) -> bool:
        """Whether the prompt ends in ``<think>``: thinking asked for, and no trailing assistant prefill (which is
        continued as it stands)."""
        return (self.template_kwargs().get("enable_thinking") is True) and self.messages[-1].role != "assistant"

    def top_k_logprobs(self) -> int | None:
        """None without logprobs; else how many alternatives per token (top_logprobs, default 0)."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def _loc(loc: tuple) -> str:
    """('messages', 0, 'content', <union name>, 1, 'image_url', 'url') -> 'messages[0].content[1].image_url.url'."""
    out, prev = "", None
    for item in loc:
        if isinstance(item, str) and (item == "str" or item.startswith(("list[", "tagged-union[", "function-"))):
            prev = item
            continue  # pydantic names the union member it tried; the path reads better without it
        if isinstance(item, int):
            out += f"[{item}]"
        elif isinstance(prev, int) and item in PART_TYPES and ".content[" in out + "." and out.endswith(f"[{prev}]"):
            pass  # the discriminator tag of a content part
        else:
            out += f".{item}" if out else str(item)
        prev = item
    return out


def validation_message(err: ValidationError) -> tuple[str, str | None]:
    """The first pydantic error as one readable sentence and the `param` it concerns."""
    errors = err.errors(include_url=False, include_input=False)
    # `content` is a union (string | list of parts): when both members fail, say so in one sentence, and when the
    # value was a list, report the error inside the list rather than "should be a valid string".
    content_alts = [e for e in errors if len(e["loc"]) == 4 and e["loc"][2] == "content"]
    if len(content_alts) >= 2:
        where = _loc(tuple(content_alts[0]["loc"][:3]))
        return f"{where}: content must be a string or a list of content parts", where
    errors.sort(key=lambda e: 1 if (len(e["loc"]) == 4 and e["loc"][2] == "content" and e["loc"][3] == "str") else 0)
    e = errors[0]
    where = _loc(tuple(e["loc"]))
    if e["type"] == "union_tag_invalid":
        tag = (e.get("ctx") or {}).get("tag")
        msg = f"unknown content part type {tag!r} (supported: {', '.join(PART_TYPES)})"
    elif e["type"] == "union_tag_not_found":
        msg = "content part has no 'type' field"
    elif e["type"] == "literal_error" and where.endswith("role"):
        msg = f"unsupported role; expected one of {(e.get('ctx') or {}).get('expected')}"
    elif e["type"] == "missing":
        msg = "field required"
    elif e["type"] in ("model_type", "dict_type"):
        msg = "must be a JSON object"
    else:
        msg = e["msg"]
    return (f"{where}: {msg}" if where else msg), (where or None)


def parse_request(data: Any) -> ChatCompletionRequest:
    """Validate a decoded JSON body; every failure is a 400 APIError naming the offending field."""
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        msg, param = validation_message(e)
        raise bad_request(msg, param, "invalid_value") from None
    req.check_supported()
    return req


# ---------------------------------------------------------------------------------------------------- responses


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning: str | None = None  # a thinking model's reasoning (None when thinking is off), under both names
    reasoning_content: str | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ernie-vl"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Usage:
    """OpenAI's usage block; `prompt_tokens_details.cached_tokens`: prompt tokens not computed again (reuse)."""
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens))


def sse(obj: BaseModel | str) -> bytes:
    """One server-sent event: ``data: <json>\\n\\n`` (or the literal ``[DONE]``)."""
    payload = obj if isinstance(obj, str) else obj.model_dump_json(exclude_none=False)
    return f"data: {payload}\n\n".encode("utf-8")


def error_event(err: APIError) -> bytes:
    """An error after the stream started (the status line is already sent): OpenAI sends it as an event."""
    import json

    return f"data: {json.dumps(err.body())}\n\n".encode("utf-8")
