"""API errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}`` with the matching HTTP status.

The `openai` Python client turns these into its typed exceptions (400 BadRequestError, 401 AuthenticationError,
403 PermissionDeniedError, 404 NotFoundError, 413/422 APIStatusError, 429 RateLimitError, 5xx InternalServerError).
Messages are written by this package: they never contain file contents, decoder output or stack traces.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error answered to the client as-is (the message must be safe to show)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",  # noqa: A002 - the OpenAI field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def forbidden(message: str, param: str | None = None, code: str = "forbidden_media_source") -> APIError:
    return APIError(403, message, "permission_error", param, code)


def too_large(message: str, param: str | None = None, code: str = "payload_too_large") -> APIError:
    return APIError(413, message, "invalid_request_error", param, code)


def overloaded(message: str, retry_after_s: int = 1) -> APIError:
    return APIError(429, message, "rate_limit_error", None, "server_overloaded", {"Retry-After": str(retry_after_s)})


def unavailable(message: str) -> APIError:
    return APIError(503, message, "server_error", None, "service_unavailable")


def internal(request_id: str) -> APIError:
    """The only answer to an unexpected exception: the details go to the replica log under `request_id`."""
    return APIError(500, f"internal server error (request id {request_id}); details are in the server log",
                    "server_error", None, "internal_error")
