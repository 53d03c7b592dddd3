"""An OpenAI-compatible chat-completions client for LLM judges, standard library only (urllib + threads).

One request per prompt::

    POST <endpoint>  {"model": M, "messages": [{"role": "user", "content": prompt}],
                      "temperature": 0, "max_tokens": N}
    → choices[0].message.content

Any server speaking this API works: OpenAI, vLLM, SGLang, and ``ernie-vl serve`` itself.

* ``url``: a base URL as the ``openai`` client takes it (``http://127.0.0.1:8000/v1``), or the full
  ``.../chat/completions`` endpoint.
* API key: read from the environment variable named by ``api_key_env`` (default ``ERNIE_VL_JUDGE_API_KEY``,
  then ``OPENAI_API_KEY``) when the client is built, sent as ``Authorization: Bearer``; never stored elsewhere,
  never written to a file.
* Retries: a connection error, a timeout, HTTP 429 and HTTP 5xx are retried up to ``max_retries`` times, after
  ``backoff_s * 2**attempt`` seconds (at most ``max_backoff_s``; a numeric ``Retry-After`` header is honoured up to
  that cap). Other HTTP errors (400, 401, 404, ...) and a body that is not a chat completion fail at once: asking
  again would get the same answer.
* Timeout: ``timeout_s`` per HTTP request.
* Concurrency: at most ``concurrency`` requests in flight (:class:`evals.judge.Judge` runs them on that many
  threads; this client is thread-safe).
* A judge that cannot be reached: once a request has spent all its retries on connection errors or timeouts, the
  client is marked down and every later request fails at once, so a stopped judge costs one request's retries,
  not one per prompt.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

DEFAULT_KEY_ENV = "ERNIE_VL_JUDGE_API_KEY"
FALLBACK_KEY_ENV = "OPENAI_API_KEY"
_RETRY_STATUS = (429, 500, 502, 503, 504)


class JudgeError(RuntimeError):
    """A judge request that failed for good (after its retries, or at once when retrying cannot help)."""


@dataclass(frozen=True)
class JudgeSettings:
    """Where the judge is and how to ask it (no secret here: the key stays in the environment)."""

    url: str
    model: str
    api_key_env: str = DEFAULT_KEY_ENV
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"judge url must start with http:// or https://, got {self.url!r}")
        if not self.model:
            raise ValueError("judge model name is empty (--judge-model)")
        for name, low in (("concurrency", 1), ("max_retries", 0), ("backoff_s", 0), ("max_backoff_s", 0)):
            if not getattr(self, name) >= low:
                raise ValueError(f"judge {name} must be >= {low}, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise ValueError(f"judge timeout_s must be > 0, got {self.timeout_s}")

    @property
    def endpoint(self) -> str:
        """The chat-completions URL: ``url`` itself when it names the endpoint, else ``url + /chat/completions``."""
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"


def api_key_from_env(name: str = DEFAULT_KEY_ENV) -> str | None:
    """The key in ``$name``, else in ``$OPENAI_API_KEY``; None when neither is set (servers without auth)."""
    return os.environ.get(name) or os.environ.get(FALLBACK_KEY_ENV) or None


class JudgeClient:
    """Thread-safe chat-completions client with bounded retries; see the module docstring."""

    def __init__(self, settings: JudgeSettings):
        self.settings = settings
        self._api_key = api_key_from_env(settings.api_key_env)
        self._lock = threading.Lock()
        self.attempts = 0  # HTTP requests started (retries included)
        self.down: str | None = None  # why the judge is considered unreachable

    def chat(self, prompt: str, max_tokens: int) -> str:
        """The judge's reply to one user message (greedy). Raises :class:`JudgeError`."""
        if self.down is not None:
            raise JudgeError(f"judge unreachable, not asking again: {self.down}")
        body = json.dumps({"model": self.settings.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": int(max_tokens)}).encode()
        s = self.settings
        last, last_retry_after, connection_failure = "", None, False
        for attempt in range(s.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, last_retry_after))
            last_retry_after = None
            try:
                return _content(self._post(body), s.endpoint)
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                if exc.code not in _RETRY_STATUS:
                    raise JudgeError(f"judge {s.endpoint} answered HTTP {exc.code}: {detail}") from None
                last, last_retry_after = f"HTTP {exc.code}: {detail}", exc.headers.get("Retry-After")
                connection_failure = False
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                    TimeoutError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                connection_failure = True
        message = f"judge {s.endpoint} failed after {s.max_retries + 1} attempt(s): {last}"
        if connection_failure:
            with self._lock:
                self.down = message
        raise JudgeError(message)

    def _post(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.settings.endpoint, data=body, headers=headers, method="POST")
        with self._lock:
            self.attempts += 1
        with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
            raw = response.read()
        try:
            return json.loads(raw)
        except ValueError:
            raise JudgeError(f"judge {self.settings.endpoint} sent a body that is not JSON: {raw[:200]!r}") from None

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        s = self.settings
        delay = s.backoff_s * 2 ** (attempt - 1)
        if retry_after is not None:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:  # an HTTP date: keep our own backoff
                pass
        return min(delay, s.max_backoff_s)


def _content(reply: dict, endpoint: str) -> str:
    """``choices[0].message.content`` of a chat completion (None content → ``""``)."""
    try:
        content = reply["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise JudgeError(f"judge {endpoint} sent no choices[0].message: {str(reply)[:200]}") from None
    return "" if content is None else str(content)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read()[:300].decode("utf-8", "replace")
    except Exception:  # the body is only for the message
        return exc.reason or ""
