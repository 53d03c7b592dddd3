"""Which frames of a video the processor keeps, and what it records about them — model-spec §11.2.

:func:`sample_frame_indices` is the reference ``Ernie4_5_VLMoeVideoProcessor.sample_frames`` policy
(``num_frames``/``fps``/``min_frames``/``max_frames``, ``torch.arange(0, total, total / num_frames).int()``);
:class:`VideoMetadata` is the per-video record (frame count, fps, size, kept indices and their timestamps) that
the processor returns and the output rows carry.

A video shorter than an explicit ``num_frames`` policy (10 frames, 32 asked) is refused by the reference; with a
``short_video`` rule it is sampled as an evaluation harness samples it instead (:data:`SHORT_VIDEO_RULES`: every frame
once, or ``n`` indices spread over the frames with repeats), so a benchmark's short clips give answers, not errors.
Videos with enough frames are sampled by the reference rule whatever ``short_video`` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import VideoError
from .video_timestamps import timestamp_texts


@dataclass
class VideoMetadata:
    """What the processor knows about one video, and which frames it kept.

    ``frames_indices`` are original frame indices (decoder output order) of the kept frames, before the odd-count
    padding; ``timestamps`` (seconds) and ``timestamp_texts`` are what was drawn on them.
    ``indices_are_sampled`` selects the reference's float32 timestamp arithmetic (indices from the sampler are an
    int32 tensor there) versus float64 (a plain list, when frames are given without sampling).
    """

    total_num_frames: int
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    video_backend: str | None = None
    frames_indices: list[int] | None = None
    indices_are_sampled: bool = False

    @property
    def timestamps(self) -> list[float]:
        if self.fps is None or self.frames_indices is None:
            raise ValueError("Cannot infer video `timestamps` when `fps` or `frames_indices` is None.")
        if self.indices_are_sampled:
            return (torch.tensor(self.frames_indices, dtype=torch.int32) / self.fps).tolist()
        return [i / self.fps for i in self.frames_indices]

    @property
    def timestamp_texts(self) -> list[str]:
        return timestamp_texts(self.frames_indices or [], self.fps or 24, self.indices_are_sampled)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record (for output rows)."""
        return {
            "total_num_frames": self.total_num_frames,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "duration": self.duration,
            "video_backend": self.video_backend,
            "frames_indices": list(self.frames_indices or []),
            "timestamps": self.timestamps if self.fps is not None and self.frames_indices is not None else None,
        }

    @classmethod
    def coerce(cls, m: Any) -> "VideoMetadata":
        if m is None or isinstance(m, VideoMetadata):
            return m
        if hasattr(m, "total_num_frames") and not isinstance(m, dict):  # a transformers VideoMetadata
            m = {k: getattr(m, k) for k in ("total_num_frames", "fps", "width", "height", "duration", "frames_indices")}
        d = dict(m)
        idx = d.get("frames_indices")
        sampled = isinstance(idx, (torch.Tensor, np.ndarray))
        if idx is not None:
            d["frames_indices"] = [int(i) for i in (idx.tolist() if hasattr(idx, "tolist") else idx)]
        known = {k: d[k] for k in ("total_num_frames", "fps", "width", "height", "duration", "video_backend", "frames_indices") if k in d}
        return cls(**known, indices_are_sampled=sampled)


def sample_frame_indices(
    total_num_frames: int,
    video_fps: float | None,
    num_frames: int | None = None,
    fps: float | None = None,
    min_frames: int = 16,
    max_frames: int = 180,
    source: str | None = None,
    short_video: str | None = None,
) -> list[int]:
    """Indices of the frames to keep (reference ``Ernie4_5_VLMoeVideoProcessor.sample_frames``, model-spec §11.2).

    ``num_frames`` (needs ``min_frames ≤ n ≤ max_frames``) or ``fps`` (frames per second of video, needs the video's
    fps); neither: every frame up to ``max_frames``. Uniform float-step ``arange`` truncated to int, computed with the
    same torch call so that the indices are bit-identical. ``num_frames`` beyond the video's frames is an error, as in
    the reference, unless ``short_video`` names a rule of :data:`SHORT_VIDEO_RULES` (then that rule picks them).
    """
    if fps is not None and num_frames is not None:
        raise VideoError("`num_frames` and `fps` are mutually exclusive arguments, please use only one!", source)
    if total_num_frames <= 0:
        raise VideoError("video has no frames", source)
    if num_frames is not None:
        if num_frames < min_frames or num_frames > max_frames:
            raise VideoError(f"`num_frames` must be {min_frames} <= x <= {max_frames}. Got {num_frames} instead.", source)
    else:
        if fps is not None and video_fps is None:
            raise VideoError("sampling with `fps` needs the video's fps, which is unknown for this input", source)
        n = total_num_frames / video_fps * fps if fps is not None else total_num_frames
        num_frames = min(max(n, min_frames), max_frames, total_num_frames)
    if num_frames > total_num_frames and short_video is not None:
        return short_video_indices(short_video, total_num_frames, int(num_frames), source)
    if num_frames > total_num_frames:
        raise VideoError(
            f"cannot sample num_frames={num_frames} from a video of total_num_frames={total_num_frames}; "
            "decrease `num_frames` or `fps`",
            source,
        )
    if num_frames <= 0:
        raise VideoError(f"nothing to sample (num_frames={num_frames})", source)
    return torch.arange(0, total_num_frames, total_num_frames / num_frames).int().tolist()


def _every_frame(total: int, n: int) -> list[int]:
    return list(range(total))


def _uniform_steps(total: int, n: int) -> list[int]:
    step = total / (n + 1)
    return [int(i * step) for i in range(1, n + 1)]


def _segment_midpoints(total: int, n: int) -> list[int]:
    seg = (total - 1) / n
    return [int(seg / 2 + np.round(seg * i)) for i in range(n)]


#: How each harness samples a video with fewer frames than the ``n`` asked (``total < n``):
#:
#: * ``every_frame`` — each frame once (``total`` frames, no repeats): transformers' own cap for the policies it
#:   accepts (``num_frames = min(..., total_num_frames)``) and lmms-eval's ``read_video``
#:   (``min(total_frames, num_frm)`` frames at ``np.linspace(0, total - 1, ...)``);
#: * ``uniform_steps`` — ``int(i * total / (n + 1))`` for ``i = 1..n`` (repeats): VLMEvalKit's
#:   ``VideoMME.save_video_frames``;
#: * ``segment_midpoints`` — ``int(seg / 2 + round(seg * i))``, ``seg = (total - 1) / n``, ``i = 0..n-1`` (repeats;
#:   round half to even, as ``np.round``): MVBench's ``get_index`` without a time bound (VLMEvalKit ``MVBench``).
SHORT_VIDEO_RULES = {"every_frame": _every_frame, "uniform_steps": _uniform_steps,
                     "segment_midpoints": _segment_midpoints}


def short_video_indices(rule: str, total_num_frames: int, num_frames: int, source: str | None = None) -> list[int]:
    """The ``num_frames`` policy applied to a video of fewer frames by the named rule (:data:`SHORT_VIDEO_RULES`);
    indices ascend and may repeat a frame."""
    fn = SHORT_VIDEO_RULES.get(rule)
    if fn is None:
        raise VideoError(f"unknown short_video rule {rule!r}; expected one of {sorted(SHORT_VIDEO_RULES)}", source)
    return fn(total_num_frames, num_frames)
