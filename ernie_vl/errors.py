"""Typed errors raised by the ERNIE-VL input processing (images, videos, text, chat messages).

Every error names the offending input (a sample id, a file name, or the position of the media item in the request)
and the cause, so that a batch pipeline can record it in the sample's error row instead of crashing the actor.

All of them derive from `ValueError`, so callers that only know the reference behaviour (transformers raises plain
`ValueError`s for most of these) keep working.
"""

from __future__ import annotations


class ProcessingError(ValueError):
    """Base class of every input-processing error raised by `ernie_vl`.

    Args:
        message: what went wrong.
        source: a short description of the input (file name, ``"image 2"``, a sample id...); prefixed to the message.
    """

    def __init__(self, message: str, source: str | None = None):
        self.source = source
        self.cause = message
        super().__init__(f"{source}: {message}" if source else message)


class MediaError(ProcessingError):
    """An image or video could not be read: missing, zero-byte, truncated, undecodable, unsupported, or too large."""


class ImageError(MediaError):
    """An image input is unreadable or not acceptable (decompression bomb, unsupported array layout...)."""


class VideoError(MediaError):
    """A video input is unreadable (no video stream, truncated, zero frames) or cannot be sampled as asked."""


class AspectRatioError(MediaError):
    """The image/video aspect ratio is beyond the 200:1 guard of `smart_resize` (the reference raises too)."""


class DecompressionBombError(ImageError):
    """The decoded image would have more pixels than the configured `max_decoded_pixels` limit."""


class PlaceholderMismatchError(ProcessingError):
    """The number of image/video placeholders in the text does not match the number of images/videos given."""


class ChatFormatError(ProcessingError):
    """A chat message is malformed: unknown role layout, unknown content part type, missing media reference."""
