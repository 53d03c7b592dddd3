"""An image's stored width and height, read from its header bytes (no pixel decoding, no Pillow).

Grounding benchmarks (RefCOCO) compare boxes in the image's pixel coordinates, so the reader records each
image's size next to its ground-truth box. ``evals`` may not import Pillow, and the size is in the first
bytes of every common container:

* PNG — the ``IHDR`` chunk (big-endian width, height at bytes 16–24);
* JPEG — the first start-of-frame marker (``SOF0``–``SOF15`` except ``DHT``/``JPG``/``DAC``), height then width;
* GIF — logical screen size (little-endian, bytes 6–10);
* BMP — ``BITMAPINFOHEADER`` (or the old ``BITMAPCOREHEADER``); a negative height (top-down) counts positively;
* WEBP — ``VP8`` (lossy), ``VP8L`` (lossless) or ``VP8X`` (extended) chunk.

NOTE: this is the size as stored. A JPEG with an EXIF orientation of 5–8 is shown rotated by viewers and by
the processor (which applies EXIF like transformers); COCO's boxes, and lmms-eval's ``image.width`` /
``image.height``, refer to the stored orientation, which is what this returns.
"""

from __future__ import annotations

import struct
from pathlib import Path

from evals.media import MediaError
from evals.sample import Media

_HEAD_BYTES = 1 << 16  # enough for the SOF marker of every JPEG we have seen (EXIF thumbnails come first)
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def image_size(data: bytes, what: str = "image") -> tuple[int, int]:
    """``(width, height)`` of encoded image bytes; :class:`MediaError` if the header cannot be read."""
    size = None
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        size = struct.unpack(">II", data[16:24])
    elif data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
    elif data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        size = struct.unpack("<HH", data[6:10])
    elif data.startswith(b"BM") and len(data) >= 26:
        header = int.from_bytes(data[14:18], "little")
        if header == 12:
            size = struct.unpack("<HH", data[18:22])
        else:
            width, height = struct.unpack("<ii", data[18:26])
            size = (width, abs(height))
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
    if not size or size[0] <= 0 or size[1] <= 0:
        raise MediaError(f"{what}: cannot read the image size from its header (starts with {bytes(data[:8])!r})")
    return int(size[0]), int(size[1])


def media_size(media: Media) -> tuple[int, int]:
    """``(width, height)`` of an image :class:`Media` (its bytes or the head of its file)."""
    if media.kind != "image":
        raise MediaError(f"expected an image, got a {media.kind}")
    if media.data is not None:
        return image_size(media.data)
    try:
        with open(Path(media.path), "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise MediaError(f"image {media.path}: {exc}") from None
    if head.startswith(b"\xff\xd8") and _jpeg_size(head) is None:  # SOF after a large EXIF block
        head = Path(media.path).read_bytes()
    return image_size(head, f"image {media.path}")
