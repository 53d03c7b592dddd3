"""Loading one image to RGB uint8 ``[C, H0, W0]`` exactly as transformers 5.23.0 does — model-spec §10.1.

* file path / raw bytes / base64 / ``data:`` URL → ``torchvision.io.decode_image(mode=RGB,
  apply_exif_orientation=True)`` as transformers' ``load_image_as_tensor`` (16-bit PNGs decode to uint16, as in the
  reference); formats torchvision cannot read (BMP, TIFF, ICO...) fall back to Pillow with
  ``ImageOps.exif_transpose`` (the reference would fail on them);
* ``PIL.Image`` → transformers' ``convert_to_rgb``: alpha (an ``A`` band or ``transparency`` info) composited on white,
  everything else ``convert("RGB")``; no EXIF transpose (the reference does none for PIL inputs);
* numpy / torch arrays → channel axis inferred (first wins when ambiguous), grayscale repeated, 4 channels
  alpha-composited on white in float as torchvision does.

Decoded images stay channels-last (any strides, no copy). A decoded-size guard (``max_decoded_pixels``) rejects
decompression bombs before decoding.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from torchvision.transforms.v2 import functional as tvF

from .errors import DecompressionBombError, ImageError

# Largest decoded image accepted by default: 2 × Pillow's bomb-warning threshold (Pillow itself refuses above that).
DEFAULT_MAX_DECODED_PIXELS = 2 * 89_478_485


def describe_source(src: Any) -> str:
    """A short name for an image input, for error messages."""
    if isinstance(src, (str, os.PathLike)):
        s = str(src)
        if s.startswith("data:"):
            return s[:40] + "..."
        return s if len(s) < 200 else s[:60] + "..."
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return f"<{type(src).__name__}>"


def _check_decoded_size(width: int, height: int, limit: int | None, source: str) -> None:
    if limit is not None and width * height > limit:
        raise DecompressionBombError(
            f"decoded image would have {width}x{height} = {width * height} pixels, above the limit of {limit} "
            "(max_decoded_pixels)",
            source,
        )


def _peek_size(raw: bytes, source: str) -> tuple[int, int] | None:
    """(width, height) from the header without decoding, or None if Pillow does not recognise the format."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(raw)) as im:
                return im.size
    except PIL.Image.DecompressionBombError as e:
        raise DecompressionBombError(str(e), source) from e
    except Exception:
        return None


def _decode_with_pil(raw: bytes, source: str, reason: Exception | None) -> torch.Tensor:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            im = PIL.Image.open(io.BytesIO(raw))
            im.load()
            im = PIL.ImageOps.exif_transpose(im)
            arr = convert_pil_to_rgb_array(im)
    except PIL.Image.DecompressionBombError as e:
        raise DecompressionBombError(str(e), source) from e
    except Exception as e:
        cause = f"{type(reason).__name__}: {reason}" if reason is not None else f"{type(e).__name__}: {e}"
        raise ImageError(f"cannot decode image ({_short(cause)})", source) from e
    return _from_numpy_readonly(arr).permute(2, 0, 1)


def _short(msg: str, n: int = 300) -> str:
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= n else msg[:n] + "..."


def decode_image_bytes(raw: bytes, source: str = "image", max_decoded_pixels: int | None = DEFAULT_MAX_DECODED_PIXELS) -> torch.Tensor:
    """Decode an encoded image to an RGB ``[C, H, W]`` tensor the way transformers' ``load_image_as_tensor`` does.

    uint8 for 8-bit images (uint16 for 16-bit PNGs, as the reference); EXIF orientation applied. Raises
    :class:`ImageError` for empty/truncated/undecodable data, :class:`DecompressionBombError` above the limit.
    """
    from torchvision.io import ImageReadMode, decode_image

    if len(raw) == 0:
        raise ImageError("empty image data (0 bytes)", source)
    size = _peek_size(raw, source)
    if size is not None:
        _check_decoded_size(size[0], size[1], max_decoded_pixels, source)
    buf = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = decode_image(buf, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as e:
        text = str(e)
        # torchvision reads JPEG, PNG, GIF, WEBP (and AVIF/HEIC with extra libraries); let Pillow try the rest.
        if "Unsupported image file" in text or "unsupported" in text.lower():
            return _decode_with_pil(raw, source, None)
        if size is None:
            raise ImageError(f"cannot decode image: unknown or corrupt format ({_short(text)})", source) from e
        raise ImageError(f"cannot decode image: truncated or corrupt data ({_short(text)})", source) from e
    if size is None:
        _check_decoded_size(img.shape[-1], img.shape[-2], max_decoded_pixels, source)
    if img.ndim == 4:  # animated GIF/WebP: torchvision returns every frame
        if img.shape[0] != 1:
            raise ImageError(f"animated image with {img.shape[0]} frames; pass a single frame (or a video)", source)
        img = img[0]
    return img


def _read_source(src: str | os.PathLike, source: str) -> bytes:
    """Bytes of a path, ``file://`` URL, ``data:...;base64,`` URL or bare base64 string (transformers' order:
    an existing file wins, then data URL / base64)."""
    s = os.fspath(src)
    if isinstance(s, bytes):
        s = s.decode(errors="replace")
    if s.startswith(("http://", "https://")):
        raise ImageError("remote URLs are not fetched by the processor; download the image first", source)
    path = s[len("file://") :] if s.startswith("file://") else s
    if os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise ImageError(f"cannot read file ({e.strerror})", source) from e
    if s.startswith("data:"):
        header, _, payload = s.partition(",")
        if ";base64" not in header:
            raise ImageError("data URL is not base64-encoded", source)
        s = payload
    elif isinstance(src, os.PathLike) or not _looks_like_base64(s):
        raise ImageError("file not found (and not base64 data)", source)
    try:
        return base64.b64decode("".join(s.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError(f"invalid base64 image data ({e})", source) from e


def _looks_like_base64(s: str) -> bool:
    s = "".join(s[:8192].split())
    return len(s) >= 16 and all(c.isalnum() or c in "+/=" for c in s)


def convert_pil_to_rgb_array(image: PIL.Image.Image) -> np.ndarray:
    """transformers' ``convert_to_rgb(return_numpy=True)``: alpha composited on white, else ``convert("RGB")``.

    Returns ``[H, W, 3]`` uint8.
    """
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = PIL.Image.alpha_composite(background, rgba).convert("RGB")
    else:
        rgb = image.convert("RGB")
    return np.asarray(rgb)


def _from_numpy_readonly(arr: np.ndarray) -> torch.Tensor:
    """Wrap an array without copying even if it is read-only (Pillow's array interface is); we never write to it."""
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def _array_to_rgb(arr: torch.Tensor, source: str) -> torch.Tensor:
    """numpy/torch image → ``[C, H, W]`` RGB as the reference's ``process_image`` + ``convert_to_rgb``."""
    if arr.ndim == 2:
        arr = arr.unsqueeze(0)
    if arr.ndim != 3:
        raise ImageError(f"image arrays must have 2 or 3 dimensions, got shape {tuple(arr.shape)}", source)
    if arr.shape[0] in (1, 3, 4):
        chw = arr
    elif arr.shape[-1] in (1, 3, 4):
        chw = arr.permute(2, 0, 1)
    else:
        raise ImageError(f"cannot infer the channel axis of an image of shape {tuple(arr.shape)}", source)
    if chw.dtype == torch.bool:
        raise ImageError("boolean image arrays are not supported", source)
    chw = tvF.grayscale_to_rgb(chw)
    if chw.shape[0] == 4:
        if chw.is_floating_point() and (chw.min() < 0.0 or chw.max() > 1.0):
            raise ImageError(
                f"RGBA float image values must be in [0, 1], got [{chw.min().item()}, {chw.max().item()}]", source
            )
        hwc = chw.movedim(-3, -1)
        dtype = hwc.dtype
        f = tvF.to_dtype(hwc, torch.float32, scale=True)
        f = f[..., :3] * f[..., 3:] + (1 - f[..., 3:])
        chw = tvF.to_dtype(f, dtype, scale=True).movedim(-1, -3)
    return chw


def load_image(
    image: Any,
    source: str | None = None,
    max_decoded_pixels: int | None = DEFAULT_MAX_DECODED_PIXELS,
    convert_rgb: bool = True,
) -> torch.Tensor:
    """Any supported image input → RGB ``[3, H, W]`` tensor (uint8 for 8-bit sources; strides not normalized).

    Accepts ``PIL.Image``, numpy arrays and torch tensors (``HWC``/``CHW``/``HW``), file paths (``str``/``Path``,
    ``file://``), raw encoded bytes, base64 strings and ``data:image/...;base64,`` URLs, and binary file objects.
    ``source`` names the input in errors (defaults to a short description of it).
    """
    source = source or describe_source(image)
    if isinstance(image, PIL.Image.Image):
        w, h = image.size
        _check_decoded_size(w, h, max_decoded_pixels, source)
        try:
            arr = convert_pil_to_rgb_array(image) if convert_rgb else np.array(image)
        except (OSError, ValueError) as e:
            raise ImageError(f"cannot read PIL image ({_short(str(e))})", source) from e
        t = _from_numpy_readonly(arr)
        return t.permute(2, 0, 1) if t.ndim == 3 else t.unsqueeze(0)
    if isinstance(image, np.ndarray):
        t = _from_numpy_readonly(image)
        return _array_to_rgb(t, source) if convert_rgb else t
    if isinstance(image, torch.Tensor):
        return _array_to_rgb(image, source) if convert_rgb else image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(image), source, max_decoded_pixels)
    if isinstance(image, (str, os.PathLike)):
        return decode_image_bytes(_read_source(image, source), source, max_decoded_pixels)
    if hasattr(image, "read"):
        try:
            raw = image.read()
        except OSError as e:
            raise ImageError(f"cannot read file object ({e})", source) from e
        return decode_image_bytes(bytes(raw), source, max_decoded_pixels)
    raise ImageError(
        f"unsupported image input type {type(image).__name__} (expected PIL image, array, path, bytes, base64)", source
    )
