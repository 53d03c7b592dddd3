"""Frame timestamps: the reference's ``"time: HH:MM:SS.ss"`` texts and their drawing on the frames — model-spec §11.

Texts are ``index / fps`` in the reference's arithmetic (float32 for sampled indices); drawing is black text with a
white stroke at the top-left corner of the full-resolution frame, font size ``int(min(W0, H0)·0.1)``, pixel-identical
to the reference but on a small crop with a cached font.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import PIL.Image
import torch
from PIL import ImageDraw, ImageFont

from .errors import VideoError


def _format_timestamp(hours: float, mins: float, secs: float) -> str:
    return f"time: {int(hours):02d}:{int(mins):02d}:{secs:05.02f}"


def timestamp_texts(indices: Sequence[int], fps: float, float32: bool = True) -> list[str]:
    """``"time: HH:MM:SS.ss"`` for each frame index (reference ``_convert_timestamp`` of ``index / fps``).

    ``float32``: the reference divides an int32 index tensor by the fps, so the arithmetic is float32; with a plain
    list of indices it is float64.
    """
    if not len(indices):
        return []
    if float32:
        ts = torch.tensor(list(indices), dtype=torch.int32) / fps
        hours = ts // 3600
        ts = ts % 3600
        mins = ts // 60
        ts = ts % 60
        return [_format_timestamp(h, m, s) for h, m, s in zip(hours.tolist(), mins.tolist(), ts.tolist())]
    out = []
    for i in indices:
        t = i / fps
        h, t = t // 3600, t % 3600
        m, t = t // 60, t % 60
        out.append(_format_timestamp(h, m, t))
    return out


class TimestampDrawer:
    """Draws the reference timestamp (black text, white stroke, top-left) on HWC uint8 frames, in place.

    Pixel-identical to the reference, which converts the whole frame to PIL, loads the font file again and draws:
    here the font is cached per size and only the crop covering the text's bounding box goes through PIL.
    """

    def __init__(self, font_path: str | os.PathLike, size_factor: float = 0.1):
        self.font_path = str(font_path)
        self.size_factor = size_factor
        self._fonts: dict[int, ImageFont.FreeTypeFont] = {}
        self._crops: dict[tuple[int, int, str], tuple[int, int]] = {}
        try:
            ImageFont.truetype(self.font_path)
        except (OSError, TypeError) as e:
            raise OSError(f"Could not load the timestamp font {self.font_path!r}: {e}") from e

    def font(self, size: int) -> ImageFont.FreeTypeFont:
        f = self._fonts.get(size)
        if f is None:
            f = self._fonts[size] = ImageFont.truetype(self.font_path, size)
        return f

    def _crop_size(self, font, font_size: int, stroke: int, text: str) -> tuple[int, int]:
        """A (width, height) from the top-left corner that contains every pixel the text drawing can touch.

        Cached per font size and text "shape" (digits replaced by the widest digit, so one measurement covers all
        timestamps); a margin of a quarter font size plus the stroke covers kerning and antialiased edges.
        """
        shape = "".join("0" if c.isdigit() else c for c in text)
        key = (font_size, stroke, shape)
        size = self._crops.get(key)
        if size is None:
            widest = max("0123456789", key=lambda d: font.getlength(d))
            probe = "".join(widest if c.isdigit() else c for c in text)
            boxes = [font.getbbox(t, stroke_width=stroke) for t in (probe, text)]
            margin = font_size // 4 + stroke + 4
            size = (max(b[2] for b in boxes) + margin, max(b[3] for b in boxes) + margin)
            self._crops[key] = size
        return size

    def draw(self, frame: np.ndarray, text: str, source: str | None = None) -> None:
        """``frame`` ``[H, W, 3]`` uint8, writable; modified in place."""
        h, w = frame.shape[:2]
        font_size = int(min(w, h) * self.size_factor)
        if font_size <= 0:
            raise VideoError(
                f"frames of {w}x{h} are too small to draw timestamps on (font size {font_size}); "
                "pass draw_on_frames=False",
                source,
            )
        stroke = int(font_size * self.size_factor)
        font = self.font(font_size)
        cw, ch = self._crop_size(font, font_size, stroke, text)
        cw, ch = min(w, cw), min(h, ch)
        crop = PIL.Image.fromarray(np.ascontiguousarray(frame[:ch, :cw]))
        ImageDraw.Draw(crop).text(
            (0, 0), text, font=font, fill=(0, 0, 0), stroke_width=stroke, stroke_fill=(255, 255, 255)
        )
        frame[:ch, :cw] = np.asarray(crop)
