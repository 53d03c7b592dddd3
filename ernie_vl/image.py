"""Image loading and preprocessing, identical to transformers 5.23.0 ``Ernie4_5_VLMoeImageProcessor`` (torchvision
backend, the one ``AutoProcessor`` picks) — model-spec §10.

Legend: ``H, W`` image size after ``smart_resize`` (multiples of 28), ``C`` = 3 channels, ``P`` = 14 patch size,
``M`` = 2 merge size, ``gh = H/P``, ``gw = W/P``, ``N = Σ gh·gw`` rows over the batch, ``D = C·P·P = 588`` row width.

Pipeline per image (reference semantics, faster implementation):

1. **Load** to RGB uint8 ``[C, H0, W0]`` (any strides; decoded images stay channels-last, no copy):
   * file path / raw bytes / base64 / ``data:`` URL → ``torchvision.io.decode_image(mode=RGB,
     apply_exif_orientation=True)`` exactly as transformers' ``load_image_as_tensor`` (16-bit PNGs decode to uint16,
     as in the reference); formats torchvision cannot read (BMP, TIFF, ICO...) fall back to Pillow with
     ``ImageOps.exif_transpose`` (the reference would fail on them);
   * ``PIL.Image`` → transformers' ``convert_to_rgb``: alpha (an ``A`` band or ``transparency`` info) composited on
     white, everything else ``convert("RGB")``; no EXIF transpose (the reference does none for PIL inputs);
   * numpy / torch arrays → channel axis inferred (first wins when ambiguous), grayscale repeated, 4 channels
     alpha-composited on white in float as torchvision does.
   A decoded-size guard (``max_decoded_pixels``) rejects decompression bombs before decoding.
2. **Resize** to ``smart_resize(H0, W0)`` with ``torchvision.transforms.v2.functional.resize(BICUBIC,
   antialias=True)``: the same integer kernel as the reference, run on the channels-last view (no repacking).
3. **Rescale + normalize + patchify** fused: one strided uint8→float32 copy straight into the final
   ``pixel_values`` rows, then ``(x − 255·mean) / (255·std)`` in place per column (numpy, single-threaded, while the
   block is in cache) — the reference's float32 ops, so the values are bit-identical; no intermediate float image,
   no ``torch.cat``.

Output: ``pixel_values`` float32 ``[N, D]`` (row ↔ (bh, bw, mh, mw), column ↔ (c, py, px)), ``image_grid_thw``
int64 ``[n_images, 3]`` = ``[1, gh, gw]``.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from torchvision.transforms.v2 import functional as tvF

from .errors import AspectRatioError, DecompressionBombError, ImageError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Largest decoded image accepted by default: 2 × Pillow's bomb-warning threshold (Pillow itself refuses above that).
DEFAULT_MAX_DECODED_PIXELS = 2 * 89_478_485

_PIL_TO_TV_INTERPOLATION = {
    0: tvF.InterpolationMode.NEAREST,
    1: tvF.InterpolationMode.LANCZOS,
    2: tvF.InterpolationMode.BILINEAR,
    3: tvF.InterpolationMode.BICUBIC,
    4: tvF.InterpolationMode.BOX,
    5: tvF.InterpolationMode.HAMMING,
}


# --------------------------------------------------------------------------------------------------------------------
# smart_resize (model-spec §10.2)
# --------------------------------------------------------------------------------------------------------------------
def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
    source: str | None = None,
) -> tuple[int, int]:
    """Target ``(height, width)``: multiples of ``factor``, area within [min_pixels, max_pixels], aspect kept.

    Same arithmetic as the reference (Python ``round`` = ties-to-even, floor/ceil on the rescaled sides, the
    ``max(factor, ·)`` clamp that may slightly exceed ``max_pixels``). Raises :class:`AspectRatioError` (a
    ``ValueError``) when ``max/min > 200``, like the reference.
    """
    if min(height, width) <= 0:
        raise ImageError(f"image has an empty side ({height}x{width})", source)
    if max(height, width) / min(height, width) > 200:
        raise AspectRatioError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)} "
            f"(image {height}x{width})",
            source,
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class ImageProcessorConfig:
    """The ``image_processor`` section of ``processor_config.json`` (or ``preprocessor_config.json``).

    ``min_pixels``/``max_pixels`` are the config's ``size.shortest_edge``/``size.longest_edge`` (areas, not edges).
    ``max_decoded_pixels`` is ours: the decompression-bomb guard applied before decoding encoded images.
    """

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 1
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 6177
    do_resize: bool = True
    resample: int = 3
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    do_convert_rgb: bool = True
    max_decoded_pixels: int | None = DEFAULT_MAX_DECODED_PIXELS
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.min_pixels is None or self.max_pixels is None or not self.min_pixels or not self.max_pixels:
            raise ValueError(
                f"`size` dict must contain 'shortest_edge' and 'longest_edge' keys but got "
                f"min_pixels={self.min_pixels}, max_pixels={self.max_pixels}"
            )
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        if self.do_normalize and not all(self.image_std):
            raise ValueError(f"image_std must be non-zero, got {self.image_std}")

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> "ImageProcessorConfig":
        """Build from a transformers-style dict (``size: {shortest_edge, longest_edge}``); unknown keys kept in
        ``extra``. ``overrides`` use our field names (``min_pixels=...``) or the ``size`` dict."""
        d = {**d, **overrides}
        size = d.pop("size", None) or {}
        kwargs: dict[str, Any] = {}
        if "shortest_edge" in size or "longest_edge" in size:
            kwargs["min_pixels"] = size.get("shortest_edge")
            kwargs["max_pixels"] = size.get("longest_edge")
        names = {f for f in cls.__dataclass_fields__ if f != "extra"}
        extra = {}
        for k, v in d.items():
            if k in names:
                kwargs[k] = v
            else:
                extra[k] = v
        return cls(**kwargs, extra=extra)


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------
def _describe(src: Any) -> str:
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
    source = source or _describe(image)
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


# --------------------------------------------------------------------------------------------------------------------
# Resize / normalize / patchify
# --------------------------------------------------------------------------------------------------------------------
def resize(image: torch.Tensor, height: int, width: int, resample: int = 3) -> torch.Tensor:
    """``[..., C, H0, W0]`` → ``[..., C, height, width]`` exactly as the reference (torchvision v2, antialiased).

    uint8 stays uint8 (torchvision's native uint8 kernel on CPU); a channels-last input keeps its layout, which
    skips the repacking copies the reference pays for contiguous CHW images.
    """
    if tuple(image.shape[-2:]) == (height, width):
        return image
    interpolation = _PIL_TO_TV_INTERPOLATION.get(int(resample), tvF.InterpolationMode.BICUBIC)
    return tvF.resize(image, [height, width], interpolation=interpolation, antialias=True)


class _Normalizer:
    """Column vectors ``255·mean``/``255·std`` for a ``[N, C·T·P·P]`` patch matrix (float32, like the reference)."""

    def __init__(self, mean, std, rescale_factor, do_rescale, do_normalize, repeat: int):
        self.do_rescale, self.do_normalize, self.rescale_factor = do_rescale, do_normalize, rescale_factor
        if do_rescale and do_normalize:
            m = torch.tensor(mean) * (1.0 / rescale_factor)
            s = torch.tensor(std) * (1.0 / rescale_factor)
        else:
            m, s = torch.tensor(mean), torch.tensor(std)
        self.mean_col = m.to(torch.float32).repeat_interleave(repeat)
        self.std_col = s.to(torch.float32).repeat_interleave(repeat)

        self._mean_np, self._std_np = self.mean_col.numpy(), self.std_col.numpy()
        self._scale_np = np.float32(rescale_factor)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """In place on float32 ``x`` ``[..., D]``."""
        if self.do_normalize:
            return x.sub_(self.mean_col).div_(self.std_col)
        if self.do_rescale:
            return x.mul_(self.rescale_factor)
        return x

    def numpy_(self, x: np.ndarray) -> None:
        """The same float32 operations, in place on a numpy ``[..., D]`` view (single-threaded, no torch dispatch)."""
        if self.do_normalize:
            np.subtract(x, self._mean_np, out=x)
            np.divide(x, self._std_np, out=x)
        elif self.do_rescale:
            np.multiply(x, self._scale_np, out=x)


def patchify_normalize_into(
    out: torch.Tensor, image: torch.Tensor, patch_size: int, merge_size: int, normalizer: _Normalizer, temporal: int = 1
) -> None:
    """:func:`patchify_into` followed by the normalization, for one ``[C, H, W]`` image into float32 ``out``.

    uint8 images take a numpy path (one strided uint8→float32 copy, then two in-place passes while the block is in
    cache; no torch parallel regions, which cost more than they save on small blocks and busy machines). The
    arithmetic is the same IEEE float32 as the reference's, so the values are bit-identical.
    """
    if temporal != 1 or image.dtype != torch.uint8 or image.ndim != 3 or out.dtype != torch.float32:
        patchify_into(out, image, patch_size, merge_size, temporal)
        normalizer(out)
        return
    c, h, w = image.shape
    p, m = patch_size, merge_size
    gh, gw = h // p, w // p
    src = image.numpy().reshape(c, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
    dst = out.numpy()
    np.copyto(dst.reshape(gh // m, gw // m, m, m, c, p, p), src, casting="unsafe")
    normalizer.numpy_(dst)


def patchify_into(out: torch.Tensor, image: torch.Tensor, patch_size: int, merge_size: int, temporal: int = 1) -> None:
    """Write the patch rows of ``[C, H, W]`` (or a batch ``[N, C, H, W]``) into ``out`` ``[N·gh·gw, C·temporal·P·P]``.

    Row order (image, bh, bw, mh, mw), column order (c, t, py, px) — the reference's permute; the temporal copies are
    the same pixels (image ``temporal_patch_size`` = 1 in practice). Converts dtype on the fly (uint8 → float32).
    """
    batch = image if image.ndim == 4 else image.unsqueeze(0)
    n, c, h, w = batch.shape
    p, m = patch_size, merge_size
    gh, gw = h // p, w // p
    src = batch.reshape(n, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # [N, gh/m, gw/m, m, m, C, P, P]
    if temporal == 1:
        out.view(n, gh // m, gw // m, m, m, c, p, p).copy_(src)
    else:
        out.view(n, gh // m, gw // m, m, m, c, temporal, p, p).copy_(
            src.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, temporal, -1, -1)
        )


class ImageProcessor:
    """Reference-identical image preprocessing: ``processor(images)`` → ``{"pixel_values", "image_grid_thw"}``."""

    def __init__(self, config: ImageProcessorConfig | None = None, **overrides: Any):
        if config is None:
            config = ImageProcessorConfig.from_dict({}, **overrides)
        elif overrides:
            config = ImageProcessorConfig(**{**config.__dict__, **overrides})
        self.config = config
        cfg = config
        self._normalizer = _Normalizer(
            cfg.image_mean, cfg.image_std, cfg.rescale_factor, cfg.do_rescale, cfg.do_normalize,
            repeat=cfg.temporal_patch_size * cfg.patch_size * cfg.patch_size,
        )  # fmt: skip

    # -------------------------------------------------------------------------------------------------------------
    def target_size(self, height: int, width: int, source: str | None = None) -> tuple[int, int]:
        cfg = self.config
        if not cfg.do_resize:
            return height, width
        return smart_resize(height, width, cfg.factor, cfg.min_pixels, cfg.max_pixels, source=source)

    def num_patches(self, height: int, width: int) -> int:
        """``gh·gw`` for an image of this size (reference ``get_number_of_image_patches``)."""
        h, w = smart_resize(height, width, self.config.factor, self.config.min_pixels, self.config.max_pixels)
        return (h // self.config.patch_size) * (w // self.config.patch_size)

    def load(self, image: Any, source: str | None = None) -> torch.Tensor:
        return load_image(image, source, self.config.max_decoded_pixels, convert_rgb=self.config.do_convert_rgb)

    def __call__(self, images: Any, sources: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Preprocess one image or a (possibly nested) list of images.

        Returns ``pixel_values`` float32 ``[N, C·P·P]`` and ``image_grid_thw`` int64 ``[n, 3]``.
        ``sources`` optionally names each image in errors (e.g. ``"sample 17 image 2"``).
        """
        flat = flatten_images(images)
        if not flat:
            raise ImageError("no images given")
        loaded = []
        for i, img in enumerate(flat):
            src = sources[i] if sources is not None and i < len(sources) else f"image {i}" + _suffix(img)
            loaded.append((self.load(img, src), src))
        return self.preprocess_tensors(loaded)

    def preprocess_tensors(self, loaded: Sequence[tuple[torch.Tensor, str]]) -> dict[str, torch.Tensor]:
        """Resize/normalize/patchify already loaded ``[C, H, W]`` tensors (with their error names)."""
        cfg = self.config
        p = cfg.patch_size
        plans = []
        total = 0
        for img, src in loaded:
            if img.ndim != 3 or img.shape[0] != 3:
                raise ImageError(f"expected an RGB image, got a tensor of shape {tuple(img.shape)}", src)
            h, w = self.target_size(int(img.shape[-2]), int(img.shape[-1]), src)
            if h % (p * cfg.merge_size) or w % (p * cfg.merge_size):
                raise ImageError(f"image size {h}x{w} is not a multiple of {p * cfg.merge_size}", src)
            plans.append((img, h, w, total))
            total += (h // p) * (w // p)
        width = 3 * cfg.temporal_patch_size * p * p
        out = torch.empty((total, width), dtype=torch.float32)
        grids = torch.empty((len(plans), 3), dtype=torch.long)
        for i, (img, h, w, start) in enumerate(plans):
            resized = resize(img, h, w, cfg.resample) if cfg.do_resize else img
            rows = (h // p) * (w // p)
            block = out[start : start + rows]
            patchify_normalize_into(block, resized, p, cfg.merge_size, self._normalizer, cfg.temporal_patch_size)
            grids[i, 0], grids[i, 1], grids[i, 2] = 1, h // p, w // p
        return {"pixel_values": out, "image_grid_thw": grids}


def _suffix(img: Any) -> str:
    if isinstance(img, (str, os.PathLike)):
        d = _describe(img)
        return f" ({d})"
    return ""


def flatten_images(images: Any) -> list[Any]:
    """One image or a list / nested list of images → flat list (reference ``make_flat_list_of_images``);
    a 4-D array is a batch of images."""
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        flat: list[Any] = []
        for item in images:
            flat.extend(flatten_images(item) if isinstance(item, (list, tuple)) else _split_batch(item))
        return flat
    return _split_batch(images)


def _split_batch(x: Any) -> list[Any]:
    if isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 4:
        return list(x)
    return [x]
