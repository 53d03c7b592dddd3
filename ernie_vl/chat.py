"""Chat-template rendering (Jinja2) and media extraction from chat messages, as transformers 5.23.0 does it.

The ERNIE template (model-spec §12.3) emits ``<|begin_of_sentence|>``, then per message: system text + newline,
``"User: "`` + content (text parts verbatim, images as ``Picture n:<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>``,
videos as ``Video m:<|VIDEO_START|><|VIDEO_PLACEHOLDER|><|VIDEO_END|>`` with running counters over the conversation),
assistant turns as ``"\\nAssistant: "`` (+ optional ``<think>`` reasoning) + text + ``<|end_of_sentence|>``, and the
generation prompt ``"\\nAssistant: "`` + ``"<think>\\n\\n</think>\\n\\n"`` (or ``"<think>"`` with enable_thinking).

Rendering mirrors ``transformers.utils.chat_template_utils.render_jinja_template``: a sandboxed environment with
``trim_blocks`` and ``lstrip_blocks``, the ``tojson`` override and ``raise_exception``/``strftime_now`` globals, the
reasoning-field aliases (``reasoning_content``/``thinking``/``reasoning``), ``None``-valued keys dropped, OpenAI
``image_url`` blocks turned into ``image`` blocks, and the tokenizer's named special tokens as template variables.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext  # the templates use loopcontrols; importing the extension module is not implied by `import jinja2`
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ChatFormatError

# The converter's DEFAULT_CHAT_TEMPLATE with its formatting artefacts removed: the system separator and the assistant
# prefix are "\n" (the converter source had a line break plus 12 spaces inside those string literals), the
# reasoning strip/lstrip characters are "\n", and the end token is "<|end_of_sentence|>" (not "<|end_of_sentence |>").
DEFAULT_CHAT_TEMPLATE = r"""{%- set image_count = namespace(value=0) -%}
{%- set video_count = namespace(value=0) -%}
{{- '<|begin_of_sentence|>' }}
{%- for message in messages -%}
    {%- if message.role in ['system', 'user'] -%}
        {%- if message.role == 'user' -%}
            {{- 'User: ' -}}
        {%- endif -%}
        {%- if message.content is string -%}
            {{- message.content -}}
        {%- else -%}
            {%- for content_item in message.content -%}
                {%- if content_item.type == 'text' -%}
                    {{- content_item.text -}}
                {%- elif content_item.type in ['image_url', 'image'] -%}
                    {%- set image_count.value = image_count.value + 1 -%}
                    Picture {{ image_count.value }}:<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>
                {%- elif content_item.type in ['video_url', 'video'] -%}
                    {%- set video_count.value = video_count.value + 1 -%}
                    Video {{ video_count.value }}:<|VIDEO_START|><|VIDEO_PLACEHOLDER|><|VIDEO_END|>
                {%- endif -%}
            {%- endfor -%}
        {%- endif -%}
        {%- if message.role == 'system' -%}
            {{- '\n' -}}
        {%- endif -%}
    {%- elif message.role == 'assistant' -%}
        {%- macro extract_text_content(content_field) -%}
            {%- if content_field is string -%}
                {{- content_field -}}
            {%- elif content_field is iterable and content_field is not string -%}
                {%- set ns = namespace(text_parts=[]) -%}
                {%- for item in content_field -%}
                    {%- if item.type == 'text' -%}
                        {%- set ns.text_parts = ns.text_parts + [item.text] -%}
                    {%- endif -%}
                {%- endfor -%}
                {{- ns.text_parts | join("") -}}
            {%- else -%}
                {{- '' -}}
            {%- endif -%}
        {%- endmacro -%}
        {%- set reasoning_content = extract_text_content(message.reasoning_content) -%}
        {%- set content = extract_text_content(message.content) -%}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if reasoning_content %}
            {{- '\n' + 'Assistant: ' + '<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
        {%- else %}
            {{- '\n' + 'Assistant: ' + content }}
        {%- endif %}
        {{- '<|end_of_sentence|>' }}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt is not defined or add_generation_prompt is true %}
    {{- '\nAssistant: ' -}}
    {%- if (enable_thinking is defined and enable_thinking is false) or enable_thinking is not defined %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
    {%- if enable_thinking is defined and enable_thinking is true %}{{- '<think>' }}{%- endif %}
{%- endif %}"""

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
IMAGE_PART_TYPES = ("image", "image_url")
VIDEO_PART_TYPES = ("video", "video_url")
TEXT_PART_TYPES = ("text",)
# Keys that may carry the media of a part, in the order transformers looks them up.
IMAGE_KEYS = ("image", "url", "path", "base64")
VIDEO_KEYS = ("video", "url", "path")


class _Namespace(jinja2.utils.Namespace):
    """Jinja namespace that refuses underscore attributes (as the transformers sandbox)."""

    def __init__(*args, **kwargs):  # noqa: N805 - same signature trick as jinja2's Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(template: str) -> jinja2.Template:
    """Compile a chat template in a sandbox configured like transformers' (cached per template string)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    return env.from_string(template)


_TEMPLATE_VARS: dict[str, frozenset[str]] = {}


def template_variables(template: str) -> frozenset[str]:
    """Undeclared variables of a template (those that ``**kwargs`` of apply_chat_template may set)."""
    found = _TEMPLATE_VARS.get(template)
    if found is None:
        env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
        found = frozenset(jinja2.meta.find_undeclared_variables(env.parse(template)))
        _TEMPLATE_VARS[template] = found
    return found


def _plain(value: Any) -> Any:
    """JSON-like copy of template data; media objects (PIL images, arrays, bytes) become an inert string."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def normalize_conversation(messages: Sequence[Mapping[str, Any]], source: str | None = None) -> list[dict[str, Any]]:
    """Drop ``None``-valued keys and turn OpenAI ``{"type": "image_url", "image_url": {"url": ...}}`` parts into
    ``{"type": "image", "url": ...}`` (what transformers does before rendering). Returns new dicts."""
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ChatFormatError(
                f"message {i} is a {type(msg).__name__}, expected a dict with 'role' and 'content'", source
            )
        msg = {k: v for k, v in msg.items() if v is not None}
        content = msg.get("content")
        if isinstance(content, list):
            new_content = []
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "image_url" and "image_url" in part:
                    info = part["image_url"]
                    url = info.get("url", "") if isinstance(info, Mapping) else info
                    new_content.append({"type": "image", "url": url})
                elif isinstance(part, Mapping) and part.get("type") == "video_url" and "video_url" in part:
                    # transformers leaves these alone (and then fails on the placeholder count); we accept them.
                    info = part["video_url"]
                    url = info.get("url", "") if isinstance(info, Mapping) else info
                    new_content.append({"type": "video", "url": url})
                else:
                    new_content.append(part)
            msg["content"] = new_content
        out.append(msg)
    return out


def validate_conversation(messages: Sequence[Mapping[str, Any]], source: str | None = None) -> None:
    """Raise :class:`ChatFormatError` for parts the template would silently drop (unknown types, non-dict parts).

    An image/video part naming no media (``{"type": "image"}``) is a placeholder: it renders as transformers renders
    it, and its media go to the processor apart (``images=``/``videos=``)."""
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if not isinstance(role, str):
            raise ChatFormatError(f"message {i} has no string 'role'", source)
        content = msg.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise ChatFormatError(f"message {i} content must be a string or a list of parts", source)
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or "type" not in part:
                raise ChatFormatError(f"message {i} part {j} must be a dict with a 'type'", source)
            ptype = part["type"]
            if ptype in TEXT_PART_TYPES:
                if not isinstance(part.get("text"), str):
                    raise ChatFormatError(f"message {i} part {j} (text) has no string 'text'", source)
            elif ptype in IMAGE_PART_TYPES or ptype in VIDEO_PART_TYPES:
                if role == "assistant":
                    raise ChatFormatError(f"message {i} part {j}: assistant messages cannot hold {ptype} parts", source)
            else:
                raise ChatFormatError(
                    f"message {i} part {j} has unknown type {ptype!r} (expected text, image, image_url, video, video_url)",
                    source,
                )


def render(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = False,
    special_tokens: Mapping[str, Any] | None = None,
    **template_kwargs: Any,
) -> str:
    """Render one conversation (already normalized) with ``template``; extra kwargs become template variables
    (e.g. ``enable_thinking=True``). ``add_generation_prompt`` is always defined, as in transformers."""
    chat = _plain(list(messages))
    aliased = []
    for msg in chat:
        reasoning = next((msg[k] for k in _REASONING_FIELDS if msg.get(k) is not None), None)
        if reasoning is not None:
            msg = {"thinking": reasoning, **msg, "reasoning_content": reasoning}
        aliased.append(msg)
    variables = {**dict(special_tokens or {}), **template_kwargs}
    variables = _plain(variables)
    return compile_template(template).render(
        messages=aliased, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **variables
    )


def collect_media(messages: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
    """Images and videos referenced by the message parts, in conversation order.

    An image part contributes the values of its ``image``/``url``/``path``/``base64`` keys (``image_url`` after
    normalization), a video part those of ``video``/``url``/``path`` — exactly what transformers collects; a
    placeholder part (no such key) contributes nothing.
    """
    images: list[Any] = []
    videos: list[Any] = []
    for msg in messages:
        content = msg.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            ptype = part.get("type")
            if ptype == "image":
                images.extend(part[k] for k in IMAGE_KEYS if k in part)
            elif ptype == "video":
                videos.extend(part[k] for k in VIDEO_KEYS if k in part)
    return images, videos
