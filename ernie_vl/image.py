"""Image loading and preprocessing, identical to transformers 5.23.0 ``Ernie4_5_VLMoeImageProcessor`` (torchvision
backend, the one ``AutoProcessor`` picks) — model-spec §10.

Legend: ``H, W`` image size after ``smart_resize`` (multiples of 28), ``C`` = 3 channels, ``P`` = 14 patch size,
``M`` = 2 merge size, ``gh = H/P``, ``gw = W/P``, ``N = Σ gh·gw`` rows over the batch, ``D = C·P·P = 588`` row width.

Pipeline per image (reference semantics, faster implementation):

1. **Load** to RGB uint8 ``[C, H0, W0]`` (any strides; decoded images stay channels-last, no copy): paths, bytes,
   base64, ``data:`` URLs, PIL images and arrays as transformers loads them, behind a decompression-bomb guard
   (:mod:`.image_load`).
2. **Resize** to ``smart_resize(H0, W0)`` with ``torchvision.transforms.v2.functional.resize(BICUBIC,
   antialias=True)``: the same integer kernel as the reference, run on the channels-last view (no repacking).
3. **Rescale + normalize + patchify** fused: one strided uint8→float32 copy straight into the final
   ``pixel_values`` rows, then ``(x − 255·mean) / (255·std)`` in place per column (numpy, single-threaded, while the
   block is in cache) — the reference's float32 ops, so the values are bit-identical; no intermediate float image,
   no ``torch.cat``.

Output: ``pixel_values`` float32 ``[N, D]`` (row ↔ (bh, bw, mh, mw), column ↔ (c, py, px)), ``image_grid_thw``
int64 ``[n_images, 3]`` = ``[1, gh, gw]``.

This module is the processor (configuration, batching); steps 2–3 are :mod:`.image_transforms` (shared with the
video processor).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .errors import ImageError
from .image_load import DEFAULT_MAX_DECODED_PIXELS, describe_source, load_image
from .image_transforms import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    Normalizer,
    patchify_normalize_into,
    resize,
    smart_resize,
)


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
# Processor
# --------------------------------------------------------------------------------------------------------------------
class ImageProcessor:
    """Reference-identical image preprocessing: ``processor(images)`` → ``{"pixel_values", "image_grid_thw"}``."""

    def __init__(self, config: ImageProcessorConfig | None = None, **overrides: Any):
        if config is None:
            config = ImageProcessorConfig.from_dict({}, **overrides)
        elif overrides:
            config = ImageProcessorConfig(**{**config.__dict__, **overrides})
        self.config = config
        cfg = config
        self._normalizer = Normalizer(
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
        d = describe_source(img)
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
