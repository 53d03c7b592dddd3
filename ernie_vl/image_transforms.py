"""From a decoded image to model rows, shared by images and video frames — model-spec §10.2–10.3.

Legend: ``H, W`` size after :func:`smart_resize` (multiples of ``P·M`` = 28), ``C`` = 3 channels, ``P`` = 14 patch
size, ``M`` = 2 merge size, ``gh = H/P``, ``gw = W/P``, ``D = C·P·P = 588`` row width.

:func:`smart_resize` (the target size), :func:`resize` (torchvision v2 bicubic, antialiased, the reference's kernel),
and the fused rescale + normalize + patchify (:class:`Normalizer`, :func:`patchify_normalize_into`): one strided
uint8→float32 copy into the output rows, then the reference's float32 ``(x − 255·mean) / (255·std)`` in place, so the
values are bit-identical.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.transforms.v2 import functional as tvF

from .errors import AspectRatioError, ImageError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_PIL_TO_TV_INTERPOLATION = {
    0: tvF.InterpolationMode.NEAREST,
    1: tvF.InterpolationMode.LANCZOS,
    2: tvF.InterpolationMode.BILINEAR,
    3: tvF.InterpolationMode.BICUBIC,
    4: tvF.InterpolationMode.BOX,
    5: tvF.InterpolationMode.HAMMING,
}


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


def resize(image: torch.Tensor, height: int, width: int, resample: int = 3) -> torch.Tensor:
    """``[..., C, H0, W0]`` → ``[..., C, height, width]`` exactly as the reference (torchvision v2, antialiased).

    uint8 stays uint8 (torchvision's native uint8 kernel on CPU); a channels-last input keeps its layout, which
    skips the repacking copies the reference pays for contiguous CHW images.
    """
    if tuple(image.shape[-2:]) == (height, width):
        return image
    interpolation = _PIL_TO_TV_INTERPOLATION.get(int(resample), tvF.InterpolationMode.BICUBIC)
    return tvF.resize(image, [height, width], interpolation=interpolation, antialias=True)


class Normalizer:
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
    out: torch.Tensor, image: torch.Tensor, patch_size: int, merge_size: int, normalizer: Normalizer, temporal: int = 1
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
