"""Safe media loading for chat requests: a part's URL -> checked bytes for the processor.

Sources: ``data:<mime>;base64,<payload>`` (always allowed), local paths and ``file://`` URLs (only inside the
configured media roots, see security.py) and ``http(s)://`` URLs (only with an allow-list; no redirects, a timeout
and a byte cap). Everything is bounded *before* decoding: encoded size before base64 decoding, file size before
reading, Content-Length and a streaming cap while downloading, then image width x height from the image header
(Pillow reads only the header in ``Image.open``) and video frames / frame size / duration from the container
(PyAV's demuxer probe, no frame is decoded). Only then do the bytes go to the processor, which decodes them.

All failures raise `APIError` with messages written here: the client learns which part failed and why, never
the bytes, the file contents or a decoder traceback.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from .errors import APIError, bad_request, too_large
from .security import check_remote_url, read_local_file, resolve_local_file
from .settings import ServeSettings

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two characters at least: "C:\\x" is a path
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")


@dataclass
class MediaInfo:
    """What the header checks learned (reported in logs and tests)."""

    kind: str  # "image" | "video"
    nbytes: int
    width: int
    height: int
    frames: int = 1
    seconds: float = 0.0


def load_media(url: str, kind: str, where: str, settings: ServeSettings) -> tuple[bytes, MediaInfo]:
    """Fetch and check one image or video. `where` names the part in error messages (``messages[0].content[1]``)."""
    if url.startswith("data:"):
        data = _decode_data_url(url, kind, where, settings.max_media_bytes)
    elif url.startswith(("http://", "https://")):
        check_remote_url(url, settings.allowed_url_prefixes, where)
        data = _fetch(url, where, settings.max_media_bytes, settings.url_timeout_s)
    elif _SCHEME.match(url) and not url.startswith("file:"):
        scheme = _SCHEME.match(url).group(1)
        raise bad_request(f"{where}: unsupported URL scheme {scheme!r} (use data:, http(s): or a local path)")
    else:
        real = resolve_local_file(url, settings.media_roots, where)
        data = read_local_file(real, settings.max_media_bytes, where)
    info = check_image(data, where, settings) if kind == "image" else check_video(data, where, settings)
    return data, info


def _decode_data_url(url: str, kind: str, where: str, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise bad_request(f"{where}: malformed data URL (no ',' separating the header from the data)")
    meta = header[5:].split(";")
    if "base64" not in meta[1:]:
        raise bad_request(f"{where}: data URLs must be base64-encoded ('data:<mime>;base64,...')")
    mime = meta[0].lower()
    if mime and not (mime.startswith(f"{kind}/") or mime == "application/octet-stream"):
        raise bad_request(f"{where}: the {kind} part carries a data URL of type {mime!r}")
    # 4 encoded characters carry 3 bytes: refuse before decoding anything
    if (len(payload) // 4) * 3 > max_bytes + 3:
        raise too_large(f"{where}: the inline {kind} exceeds the media limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the data URL is not valid base64") from None
    if not data:
        raise bad_request(f"{where}: the inline {kind} is empty")
    if len(data) > max_bytes:
        raise too_large(f"{where}: the inline {kind} exceeds the media limit of {max_bytes} bytes")
    return data


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # a redirect could leave the allow-list
        return None


def _fetch(url: str, where: str, max_bytes: int, timeout_s: float) -> bytes:
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, headers={"User-Agent": "ernie-vl-serve"})
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            if resp.status != 200:
                raise bad_request(f"{where}: fetching the URL returned HTTP {resp.status}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise too_large(f"{where}: the remote file is {declared} bytes; the media limit is {max_bytes}")
            data = resp.read(max_bytes + 1)
    except APIError:
        raise
    except urllib.error.HTTPError as e:
        raise bad_request(f"{where}: fetching the URL returned HTTP {e.code} (redirects are not followed)") from None
    except (urllib.error.URLError, OSError, ValueError):
        raise bad_request(f"{where}: the URL could not be fetched") from None
    if len(data) > max_bytes:
        raise too_large(f"{where}: the remote file exceeds the media limit of {max_bytes} bytes")
    if not data:
        raise bad_request(f"{where}: the URL returned no data")
    return data


def check_image(data: bytes, where: str, settings: ServeSettings) -> MediaInfo:
    """Read the image header only and enforce the pixel limit (a decompression bomb is refused undecoded; a large
    photo is accepted: the processor resizes it to its own pixel budget)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
            with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header, decodes nothing
                fmt, (w, h) = im.format, im.size
    except Image.DecompressionBombError:  # beyond twice Pillow's MAX_IMAGE_PIXELS: Pillow refuses it itself
        raise bad_request(f"{where}: the image has too many pixels (limit {settings.max_image_pixels})",
                          code="image_too_large") from None
    except Exception:  # noqa: BLE001 - any parser failure means "not an image we accept"
        raise bad_request(f"{where}: the image could not be identified (supported: {', '.join(IMAGE_FORMATS)})",
                          code="invalid_image") from None
    if fmt not in IMAGE_FORMATS:
        raise bad_request(f"{where}: image format {fmt} is not accepted (supported: {', '.join(IMAGE_FORMATS)})",
                          code="invalid_image")
    if w * h > settings.max_image_pixels:
        raise bad_request(f"{where}: the image is {w}x{h} = {w * h} pixels; the limit is {settings.max_image_pixels}",
                          code="image_too_large")
    return MediaInfo("image", len(data), w, h)


def check_video(data: bytes, where: str, settings: ServeSettings) -> MediaInfo:
    """Read the container header (PyAV demuxer probe) and enforce frame-size, frame-count and duration limits."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            streams = container.streams.video
            if not streams:
                raise bad_request(f"{where}: the file has no video stream", code="invalid_video")
            st = streams[0]
            w, h = int(st.codec_context.width or 0), int(st.codec_context.height or 0)
            rate = float(st.average_rate or st.guessed_rate or 0)
            seconds = 0.0
            if st.duration is not None and st.time_base is not None:
                seconds = float(st.duration * st.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
            frames = int(st.frames or 0) or int(round(seconds * rate))
    except APIError:
        raise
    except Exception:  # noqa: BLE001 - demuxer errors are "not a video we can read"
        raise bad_request(f"{where}: the video could not be read", code="invalid_video") from None
    if w <= 0 or h <= 0 or frames <= 0:
        raise bad_request(f"{where}: the video's frame size or length cannot be determined before decoding",
                          code="invalid_video")
    if w * h > settings.max_video_pixels:
        raise bad_request(f"{where}: video frames are {w}x{h} = {w * h} pixels; the limit is "
                          f"{settings.max_video_pixels}", code="video_too_large")
    if frames > settings.max_video_frames:
        raise bad_request(f"{where}: the video has {frames} frames; the limit is {settings.max_video_frames}",
                          code="video_too_large")
    if seconds > settings.max_video_seconds:
        raise bad_request(f"{where}: the video lasts {seconds:.1f} s; the limit is {settings.max_video_seconds:g} s",
                          code="video_too_large")
    return MediaInfo("video", len(data), w, h, frames, seconds)
