"""Building :class:`~evals.sample.Media` from published encodings, without decoding pixels.

``evals`` may not import Pillow (metrics must run anywhere), so an image is checked by its magic bytes
(PNG, JPEG, GIF, BMP, WEBP, TIFF): that catches truncated base64, HTML error pages saved as images and
empty cells, which are the failures seen in practice. A video is checked for existence and non-zero
size. Problems are returned as an error string so that the reader can turn them into a Sample error.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from evals.sample import Media

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)

VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov", ".gif")


class MediaError(ValueError):
    """One unusable image or video; readers turn it into ``Sample.error``."""


def image_format(data: bytes) -> str | None:
    """The image container named by the magic bytes of ``data``, or None if unrecognised."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_from_bytes(data: bytes | None, what: str = "image") -> Media:
    """A Media for encoded image bytes; raise :class:`MediaError` if they are not an image."""
    if not data:
        raise MediaError(f"{what}: empty image bytes")
    if image_format(bytes(data[:16])) is None:
        raise MediaError(f"{what}: bytes are not a PNG/JPEG/GIF/BMP/WEBP/TIFF image (starts with {bytes(data[:8])!r})")
    return Media(kind="image", data=bytes(data))


def image_from_base64(text: str, what: str = "image") -> Media:
    """A Media for a base64 string as stored in VLMEvalKit TSV files."""
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"{what}: undecodable base64 ({exc})") from None
    return image_from_bytes(data, what)


def image_from_path(path: str | os.PathLike, what: str = "image") -> Media:
    """A Media for an image file on disk; the file must exist and start like an image."""
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{what}: image file not found: {p}")
    with open(p, "rb") as fh:
        head = fh.read(16)
    if image_format(head) is None:
        raise MediaError(f"{what}: not a PNG/JPEG/GIF/BMP/WEBP/TIFF image: {p}")
    return Media(kind="image", path=str(p))


def image_from_struct(value, root: Path | None, what: str = "image") -> Media:
    """A Media for a Hugging Face ``Image`` feature value: ``{"bytes": ..., "path": ...}``.

    Bytes win; a struct with only a path is resolved against the dataset folder ``root``.
    """
    if value is None:
        raise MediaError(f"{what}: missing image")
    if isinstance(value, (bytes, bytearray)):
        return image_from_bytes(bytes(value), what)
    if not isinstance(value, dict):
        raise MediaError(f"{what}: unexpected image value of type {type(value).__name__}")
    if value.get("bytes"):
        return image_from_bytes(value["bytes"], what)
    path = value.get("path")
    if path:
        candidate = Path(path)
        if not candidate.is_absolute() and root is not None:
            candidate = root / candidate
        return image_from_path(candidate, what)
    raise MediaError(f"{what}: image struct has neither bytes nor path")


def video_from_path(path: str | os.PathLike, what: str = "video") -> Media:
    """A Media for a video file (or a frame folder); it must exist and be non-empty."""
    p = Path(path)
    if p.is_dir():
        if not any(p.iterdir()):
            raise MediaError(f"{what}: frame folder is empty: {p}")
        return Media(kind="video", path=str(p))
    if not p.is_file():
        raise MediaError(f"{what}: video file not found: {p}")
    if p.stat().st_size == 0:
        raise MediaError(f"{what}: video file is empty: {p}")
    return Media(kind="video", path=str(p))


def find_video(folder: Path, stem: str, suffixes=VIDEO_SUFFIXES) -> Path | None:
    """The first ``folder/stem<suffix>`` that exists (lmms-eval also tries .MP4 and .mkv), or None."""
    for suffix in suffixes:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None
