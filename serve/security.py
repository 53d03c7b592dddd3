"""Request guards: API key, body size, local-file confinement and the remote-URL allow-list.

Threats and answers:
- Unauthenticated use: when a key is configured every route but /health needs ``Authorization: Bearer <key>``;
  the comparison is constant-time over SHA-256 digests (the server never holds the key itself).
- Memory exhaustion: the body is read in chunks and abandoned past ``max_request_bytes`` (413), before JSON parsing.
- Reading arbitrary files: local paths and ``file://`` URLs are accepted only when they resolve — symlinks and
  ``..`` included (``os.path.realpath``) — to a regular file inside a configured media root; the file is then opened
  by its resolved path with ``O_NOFOLLOW``. A path outside the roots gets the same answer whether or not it exists,
  so the server is not an oracle for the file system.
- SSRF: http(s) URLs are refused unless they start with an operator-configured prefix whose host part ends in "/"
  (``https://a.com`` can never match ``https://a.com.evil.net`` or ``https://a.com@evil.net``); URLs with user info,
  backslashes, ``..`` segments or percent-encoded dots/slashes are refused; redirects are not followed (see media.py).
"""

from __future__ import annotations

import hmac
import os
import stat
from urllib.parse import unquote, urlsplit

from .errors import APIError, bad_request, forbidden, too_large
from .settings import hash_api_key


def check_api_key(authorization: str | None, digest: str | None) -> None:
    """Raise 401 unless no key is configured or the header carries the right bearer token."""
    if digest is None:
        return
    if not authorization:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", "invalid_request_error",
                       None, "invalid_api_key")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "malformed Authorization header: expected 'Bearer <key>'", "invalid_request_error",
                       None, "invalid_api_key")
    if not hmac.compare_digest(hash_api_key(token.strip()), digest):
        raise APIError(401, "invalid API key", "invalid_request_error", None, "invalid_api_key")


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes (header or stream)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise bad_request("invalid Content-Length header") from None
        if n > limit:
            raise too_large(f"request body is {n} bytes; the limit is {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives (Windows) or mixed absolute/relative
        return False


def resolve_local_file(ref: str, roots: list[str], where: str) -> str:
    """Map a plain path or a ``file://`` URL to the real path of a regular file inside one of `roots`.

    Relative paths are taken relative to the first root. Raises 403 when local files are disabled or the path
    leaves the roots, 400 when a path inside the roots is not a readable regular file.
    """
    if not roots:
        raise forbidden(f"{where}: local files are disabled (the server has no media roots configured)")
    if ref.startswith("file:"):
        parts = urlsplit(ref)
        if parts.netloc not in ("", "localhost"):
            raise forbidden(f"{where}: file:// URLs must not name a host")
        raw = unquote(parts.path)
    else:
        raw = ref
    if "\x00" in raw:
        raise bad_request(f"{where}: the path contains a NUL character")
    candidate = raw if os.path.isabs(raw) else os.path.join(roots[0], raw)
    real = os.path.realpath(candidate)
    if not any(_within(real, os.path.realpath(root)) for root in roots):
        raise forbidden(f"{where}: the path is outside the server's allowed media roots")
    if not os.path.isfile(real):
        raise bad_request(f"{where}: no such file under the media roots", code="media_not_found")
    return real


def read_local_file(real: str, max_bytes: int, where: str) -> bytes:
    """Read a file found by `resolve_local_file`, refusing a swapped-in symlink and anything over `max_bytes`."""
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise bad_request(f"{where}: the file could not be opened", code="media_not_found") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise bad_request(f"{where}: not a regular file")
        if st.st_size > max_bytes:
            raise too_large(f"{where}: the file is {st.st_size} bytes; the media limit is {max_bytes} bytes")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large(f"{where}: the file exceeds the media limit of {max_bytes} bytes")
    return data


def check_remote_url(url: str, allowed_prefixes: list[str], where: str) -> str:
    """Return `url` if the allow-list admits it; otherwise raise 403 (never fetches anything)."""
    if not allowed_prefixes:
        raise forbidden(f"{where}: remote URLs are disabled on this server; send the media inline as a data: URL",
                        code="remote_url_forbidden")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request(f"{where}: malformed http(s) URL")
    if parts.username is not None or parts.password is not None or "\\" in url:
        raise forbidden(f"{where}: URLs with user info or backslashes are not allowed", code="remote_url_forbidden")
    lowered = parts.path.lower()
    if "%2e" in lowered or "%2f" in lowered or "%5c" in lowered:
        raise forbidden(f"{where}: percent-encoded dots or slashes are not allowed in URLs",
                        code="remote_url_forbidden")
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        raise forbidden(f"{where}: URLs with '.' or '..' path segments are not allowed", code="remote_url_forbidden")
    if not any(url.startswith(prefix) for prefix in allowed_prefixes):
        raise forbidden(f"{where}: the URL is not on the server's allow-list", code="remote_url_forbidden")
    return url
