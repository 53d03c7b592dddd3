"""A validated chat request -> processor messages -> `ModelInputs` + generation settings, with every limit checked.

Media are resolved here (never by the processor: it would read any local path it is given) and handed to the
processor as bytes, in the message layout `ernie_vl.Processor.prepare` takes — the same call that the batch pipeline
makes. Order of checks: media count -> each medium's bytes and header
(media.py) -> estimated image tokens (from header sizes, before any pixel is decoded) -> processor -> exact prompt
tokens against `max_prompt_tokens` and the model context.
"""

from __future__ import annotations

import re
from ernie_vl.generation import GenerationSettings
from ernie_vl.inputs import ModelInputs

from .errors import APIError, bad_request
from .media import MediaInfo, load_media
from .schemas import ChatCompletionRequest, ImagePart, TextPart, VideoPart
from .settings import ServeSettings


def count_media(req: ChatCompletionRequest) -> int:
    return sum(
        isinstance(part, (ImagePart, VideoPart))
        for msg in req.messages if isinstance(msg.content, list)
        for part in msg.content
    )


def to_processor_messages(req: ChatCompletionRequest, settings: ServeSettings
                          ) -> tuple[list[dict], list[MediaInfo], dict[str, list[str]]]:
    """OpenAI messages -> processor messages with media as checked bytes, their header facts, and where each image
    and video sits in the request (for error messages). Raises APIError (4xx)."""
    n_media = count_media(req)
    if n_media > settings.max_media_items:
        raise bad_request(f"the request holds {n_media} images/videos; the limit is {settings.max_media_items}",
                          "messages", "too_many_media")
    out, infos = [], []
    locations: dict[str, list[str]] = {"image": [], "video": []}
    for i, msg in enumerate(req.messages):
        role = "system" if msg.role == "developer" else msg.role
        reasoning = msg.reasoning_content if msg.reasoning_content is not None else msg.reasoning
        extra = {"reasoning_content": reasoning} if reasoning is not None else {}  # the template renders it
        if msg.content is None or isinstance(msg.content, str):
            out.append({"role": role, "content": msg.content or "", **extra})
            continue
        parts = []
        for j, part in enumerate(msg.content):
            where = f"messages[{i}].content[{j}]"
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
                continue
            if role != "user":
                raise bad_request(f"{where}: images and videos are only accepted in user messages", where)
            kind = "image" if isinstance(part, ImagePart) else "video"
            url = part.image_url.url if isinstance(part, ImagePart) else part.video_url.url
            data, info = load_media(url, kind, where, settings)
            infos.append(info)
            locations[kind].append(where)
            parts.append({"type": kind, kind: data})
        out.append({"role": role, "content": parts, **extra})
    return out, infos, locations


def estimate_image_tokens(processor, infos: list[MediaInfo]) -> int:
    """Visual tokens the images will take, from header sizes (0 when the processor cannot tell without pixels)."""
    ip = getattr(processor, "image_processor", None)
    num_patches = getattr(ip, "num_patches", None)
    if num_patches is None:
        return 0
    merge = int(getattr(getattr(ip, "config", None), "merge_size", 2) or 2)
    total = 0
    for info in infos:
        if info.kind == "image":
            try:
                total += int(num_patches(info.height, info.width)) // (merge * merge)
            except Exception:  # noqa: BLE001 - an estimate only; the processor will raise the real error
                return 0
    return total


_SOURCE = re.compile(r"^(image|video) (\d+)$")


def processing_error(exc: Exception, locations: dict[str, list[str]]) -> APIError:
    """A processor exception as a 400 that names the request part and says what is wrong, without decoder internals.

    `locations["image"][k]` is where the k-th image of the request sits (``messages[0].content[1]``); the processor
    names media by that index (``image 0``). Parenthesised details of media errors (library messages, source paths
    of the decoder) are dropped; chat-structure errors are kept as they are (they describe the request itself).
    """
    from ernie_vl.errors import MediaError, ProcessingError

    if not isinstance(exc, ProcessingError):
        return bad_request("the request could not be processed", "messages")
    where = "messages"
    m = _SOURCE.match(exc.source or "")
    if m and int(m.group(2)) < len(locations.get(m.group(1), [])):
        where = locations[m.group(1)][int(m.group(2))]
    cause = exc.cause if exc.source else str(exc)
    if isinstance(exc, MediaError):
        cause = cause.split(" (", 1)[0]  # "cannot decode image: truncated or corrupt data (<decoder internals>)"
    return bad_request(f"{where}: {cause[:300]}", where, "invalid_media" if isinstance(exc, MediaError) else None)


def run_processor(processor, messages: list[dict], locations: dict[str, list[str]] | None = None,
                  template_kwargs: dict | None = None) -> ModelInputs:
    """The batch pipeline's call (`Processor.prepare`): chat template (with the request's `chat_template_kwargs`)
    + tokenizer + image/video processors."""
    try:
        return processor.prepare(messages, **(template_kwargs or {}))
    except ValueError as e:  # ernie_vl's typed input errors derive from ValueError
        raise processing_error(e, locations or {}) from None


def request_settings(req: ChatCompletionRequest, settings: ServeSettings, defaults: GenerationSettings,
                     prompt_tokens: int, max_context: int) -> GenerationSettings:
    """Generation settings of a request: the checkpoint's defaults (generation_config.json: EOS, pad, sampling)
    with what the request asks for.

    temperature 0 (or unset with a greedy checkpoint) means greedy decoding, like the batch pipeline's defaults.
    max_tokens may be anything the model's context holds after the prompt (as vLLM), unless the operator set a
    lower `max_tokens_limit`.
    """
    if prompt_tokens > settings.max_prompt_tokens:
        raise bad_request(f"the prompt is {prompt_tokens} tokens (images and videos included); the limit is "
                          f"{settings.max_prompt_tokens}", "messages", "context_length_exceeded")
    if req.n > settings.max_batch_size:
        raise bad_request(f"n={req.n} exceeds this server's limit of {settings.max_batch_size} choices per request "
                          "(its max_batch_size)", "n", "invalid_value")
    asked = req.requested_max_tokens()
    if asked is not None and settings.max_tokens_limit is not None and asked > settings.max_tokens_limit:
        raise bad_request(f"max_tokens={asked} exceeds this server's limit of {settings.max_tokens_limit}",
                          "max_tokens", "invalid_value")
    room = max_context - prompt_tokens
    if room < 1 or (asked is not None and asked > room):
        raise bad_request(f"the prompt ({prompt_tokens} tokens) plus max_tokens ({asked}) exceeds the model's "
                          f"context of {max_context} tokens", "max_tokens", "context_length_exceeded")
    max_new = asked if asked is not None else min(settings.default_max_tokens, room)
    penalties = {"presence_penalty": req.presence_penalty or 0.0, "frequency_penalty": req.frequency_penalty or 0.0,
                 "repetition_penalty": req.repetition_penalty if req.repetition_penalty is not None else 1.0,
                 "logprobs": req.top_k_logprobs()}
    if req.temperature is None:
        do_sample, temperature = defaults.do_sample, defaults.temperature
    else:
        do_sample, temperature = req.temperature > 0, (req.temperature if req.temperature > 0 else 1.0)
    if not do_sample:
        return defaults.replace(max_new_tokens=max_new, do_sample=False, **penalties)
    import secrets

    return defaults.replace(
        max_new_tokens=max_new,
        do_sample=True,
        temperature=temperature,
        top_p=req.top_p if req.top_p is not None else defaults.top_p,
        top_k=req.top_k if req.top_k is not None else defaults.top_k,
        seed=req.seed if req.seed is not None else secrets.randbits(63),
        **penalties,
    )


def choice_settings(settings: GenerationSettings, n: int) -> list[GenerationSettings]:
    """The settings of each of `n` choices: a sampling choice i draws from seed + i (independent samples, the
    request's seed still reproduces them all); greedy choices are identical."""
    if not settings.samples:
        return [settings] * n
    return [settings] + [settings.replace(seed=(settings.seed + i) % (1 << 64)) for i in range(1, n)]


def check_estimate(estimated_tokens: int, settings: ServeSettings) -> None:
    if estimated_tokens > settings.max_prompt_tokens:
        raise APIError(400, f"the images alone need about {estimated_tokens} tokens; the prompt limit is "
                            f"{settings.max_prompt_tokens}", "invalid_request_error", "messages",
                       "context_length_exceeded")
