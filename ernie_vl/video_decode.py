"""Decoding the kept frames of a video container with PyAV, as little as possible and exactly as a full decode.

The ``i``-th frame the decoder outputs is frame ``i`` (the reference reader's rule); RGB through the same
conversion as ``VideoFrame.to_ndarray("rgb24")``. :class:`OpenedVideo` reads the packet index once (demux only),
then decodes only what the wanted indices need: it stops after the last one, seeks over GOPs that hold no wanted
frame (to closed entry points only, found with :mod:`.video_nal`) and lets the decoder drop unwanted
non-reference frames. Every shortcut is checked against a full sequential decode in the tests.
"""

from __future__ import annotations

import io
import os
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import VideoError
from .video_nal import idr_checker
from .video_sampling import VideoMetadata


# Codecs whose decoders honour ``skip_frame = NONREF`` exactly (they only drop frames nothing else references).
_SKIP_SAFE_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video"})
# Containers whose packet pts are presentation timestamps (AVI's are decode-order counters, for instance), so that
# sorting them gives the decoder's output order.
_PTS_RELIABLE_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})


def _open_container(src: Any, source: str):
    import av

    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if path.startswith(("http://", "https://")):
            raise VideoError("remote URLs are not fetched by the processor; download the video first", source)
        if path.startswith("file://"):
            path = path[len("file://") :]
        if not os.path.isfile(path):
            raise VideoError("file not found", source)
        if os.path.getsize(path) == 0:
            raise VideoError("empty video file (0 bytes)", source)
        target = path
    elif isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise VideoError("empty video data (0 bytes)", source)
        target = io.BytesIO(bytes(src))
    elif hasattr(src, "read"):
        target = src
    else:
        raise VideoError(f"unsupported video input type {type(src).__name__}", source)
    try:
        container = av.open(target, mode="r")
    except Exception as e:  # av.error.* (InvalidDataError, ...), OSError
        raise VideoError(f"cannot open video ({type(e).__name__}: {_short(e)})", source) from e
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream in the file", source)
    return container


def _short(e: Any, n: int = 200) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[:n] + "..."


class _SeekMismatch(Exception):
    """The demuxer did not land where a jump needed it; the caller falls back to sequential decoding."""


class OpenedVideo:
    """A video container with its packet index (pass 1: demux only) and the reference metadata.

    Decoding (:meth:`frames`) reopens the container and produces exactly the frames a full sequential decode would
    give for the wanted indices, while decoding as little as possible:

    * sequential mode (any container/codec): decode in order, stop after the last wanted frame;
    * skipping mode (mp4/mov and Matroska, where packet pts are presentation times, with H.264/HEVC/MPEG-4/MPEG-2):
      unwanted non-reference frames are dropped by the decoder (``skip_frame=NONREF``), and whole GOPs without a
      wanted frame are skipped by seeking to the next *closed* entry point (a keyframe that is an IDR picture for
      H.264/HEVC, and whose GOP shows no frame before it), so every decoded frame has its full-decode pixels.
    """

    def __init__(self, src: Any, source: str):
        from av.video.reformatter import VideoReformatter

        self.source = source
        if hasattr(src, "read") and not isinstance(src, (str, os.PathLike)):
            try:
                src = src.read()
            except OSError as e:
                raise VideoError(f"cannot read file object ({e})", source) from e
        self._src = src
        self.container = _open_container(src, source)
        # One cached swscale context per video; same conversion as `VideoFrame.to_ndarray(format="rgb24")`.
        self._reformatter = VideoReformatter()
        self.stats = {"packets_decoded": 0, "jumps": 0}
        try:
            self.stream = self.container.streams.video[0]
            self.codec = self.stream.codec_context.name
            is_idr = idr_checker(self.codec, self.stream.codec_context.extradata)
            pts, key, idr = [], [], []
            # Packets the demuxer flags as discarded (edit lists) or corrupt are decoded but may not be output, so
            # the i-th output frame is no longer the i-th packet in pts order: such files decode sequentially.
            self._irregular = False
            try:
                for p in self.container.demux(self.stream):
                    if p.size <= 0:
                        continue
                    self._irregular |= bool(p.is_discard or p.is_corrupt)
                    pts.append(p.pts)
                    key.append(bool(p.is_keyframe))
                    idr.append(bool(p.is_keyframe) and (is_idr is None or is_idr(bytes(p))))
            except Exception as e:
                raise VideoError(f"cannot read video packets ({type(e).__name__}: {_short(e)})", source) from e
            if not pts:
                raise VideoError("video stream has no frames", source)
            self._pts, self._key, self._idr = pts, key, idr
            rate = self.stream.average_rate or self.stream.guessed_rate
            self.fps = float(rate) if rate else None
            # The reference trusts the container's frame count; when a container has none (Matroska, WebM) the
            # reference would fail, we count the packets instead.
            self.total = int(self.stream.frames) or len(pts)
            self.width, self.height = self.stream.codec_context.width, self.stream.codec_context.height
        except BaseException:
            self.container.close()
            raise

    def metadata(self) -> VideoMetadata:
        return VideoMetadata(
            total_num_frames=self.total,
            fps=self.fps,
            width=self.width,
            height=self.height,
            duration=self.total / self.fps if self.fps else 0.0,
            video_backend="pyav",
        )

    def close(self):
        self.container.close()

    def _reopen(self):
        self.container.close()
        self.container = _open_container(self._src, self.source)
        self.stream = self.container.streams.video[0]

    def _pts_index(self) -> dict[int, int] | None:
        pts = self._pts
        if any(p is None for p in pts) or len(set(pts)) != len(pts):
            return None
        return {p: i for i, p in enumerate(sorted(pts))}

    def frames(self, wanted: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, rgb24 [H0, W0, 3] uint8)`` for each wanted index, ascending; stops after the last one.
        Raises :class:`VideoError` if a wanted frame never comes out (truncated file, wrong frame count)."""
        wanted = sorted(set(int(i) for i in wanted))
        if not wanted:
            return
        self._reopen()
        index_of = None if self._irregular else self._pts_index()
        if index_of is not None and self.codec in _SKIP_SAFE_CODECS and self.container.format.name in _PTS_RELIABLE_FORMATS:
            done: list[int] = []
            try:
                for item in self._frames_skipping(wanted, index_of):
                    done.append(item[0])
                    yield item
                return
            except _SeekMismatch:
                self._reopen()
                wanted = [w for w in wanted if w > (done[-1] if done else -1)]
        yield from self._frames_sequential(wanted)

    def _rgb(self, frame) -> np.ndarray:
        return self._reformatter.reformat(frame, format="rgb24").to_ndarray()

    def _decode(self, packet):
        if packet is not None:
            self.stats["packets_decoded"] += 1
        try:
            return self.stream.codec_context.decode(packet)
        except Exception as e:
            raise VideoError(f"decoding failed ({type(e).__name__}: {_short(e)})", self.source) from e

    def _demux(self):
        try:
            for p in self.container.demux(self.stream):
                if p.size > 0:
                    yield p
        except Exception as e:
            raise VideoError(f"cannot read video packets ({type(e).__name__}: {_short(e)})", self.source) from e

    def _frames_sequential(self, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        if not wanted:
            return
        wanted_set, last = set(wanted), wanted[-1]
        i = 0
        for packet in _with_flush(self._demux()):
            for frame in self._decode(packet):
                if i in wanted_set:
                    yield i, self._rgb(frame)
                i += 1
                if i > last:
                    return
        raise VideoError(
            f"video is truncated: only {i} frames could be decoded (container says {self.total}, wanted up to {last})",
            self.source,
        )

    def _entry_points(self, disp: list[int]) -> list[int]:
        """For each decode position q, the last closed entry point at or before q (position 0 always counts)."""
        n = len(disp)
        keys = [i for i in range(n) if self._key[i]] + [n]
        entry = [False] * n
        entry[0] = True
        for a, b in zip(keys, keys[1:]):
            # closed: an IDR (for H.264/HEVC) and no frame of its GOP is shown before it
            if self._idr[a] and all(disp[j] > disp[a] for j in range(a + 1, b)):
                entry[a] = True
        last, out = 0, []
        for i in range(n):
            if entry[i]:
                last = i
            out.append(last)
        return out

    def _frames_skipping(self, wanted: list[int], index_of: dict[int, int]) -> Iterator[tuple[int, np.ndarray]]:
        pts = self._pts
        disp = [index_of[p] for p in pts]  # presentation index of each packet, in decode order
        pos_of_disp = {d: i for i, d in enumerate(disp)}
        pos_of_pts = {p: i for i, p in enumerate(pts)}
        entry_before = self._entry_points(disp)
        remaining = list(wanted)  # ascending
        wanted_set = set(wanted)
        last_idx = -1
        cursor = 0  # next decode position the demuxer will give
        floor = 0  # last entry point jumped to (never jump back to or before it)
        cc = self.stream.codec_context
        skip_state = None
        packets = self._demux()

        resync = False  # right after a jump: frames before the last emitted one may be decoded again

        def emit(frames):
            nonlocal last_idx, resync
            for frame in frames:
                idx = index_of.get(frame.pts)
                if resync and idx is not None and idx <= last_idx:
                    continue  # the seek landed before the entry point; these were handled already
                resync = False
                if idx is None or idx <= last_idx:
                    # Output order disagrees with the packet timestamps: refuse rather than mislabel frames.
                    raise VideoError(
                        f"decoder output order does not follow the packet timestamps (pts {frame.pts}); "
                        "cannot map frames to indices",
                        self.source,
                    )
                last_idx = idx
                if idx in wanted_set:
                    wanted_set.discard(idx)
                    remaining.remove(idx)
                    yield idx, self._rgb(frame)

        while remaining:
            if remaining[0] in pos_of_disp:
                target = entry_before[pos_of_disp[remaining[0]]]
                if target > cursor and target > floor:
                    # Nothing wanted before `target` is still undecoded: drain, reset and seek to the entry point.
                    yield from emit(self._decode(None))
                    if not remaining:
                        return
                    cc.flush_buffers()
                    try:
                        self.container.seek(pts[target], stream=self.stream, backward=True, any_frame=False)
                    except Exception as e:
                        raise _SeekMismatch() from e
                    packets = self._demux()
                    floor, cursor, skip_state, resync = target, -1, None, True
                    self.stats["jumps"] += 1
            packet = next(packets, None)
            if packet is None:
                yield from emit(self._decode(None))
                break
            pos = pos_of_pts.get(packet.pts)
            if pos is None:
                raise _SeekMismatch()
            if cursor == -1 and (pos > floor or not self._key[pos]):
                raise _SeekMismatch()  # landed after the entry point, or not on a keyframe
            cursor = pos + 1
            # Non-reference frames that are not wanted are dropped by the decoder; reference frames are always
            # decoded, so every wanted frame gets exactly the pixels of a full sequential decode.
            state = "DEFAULT" if disp[pos] in wanted_set else "NONREF"
            if state != skip_state:
                cc.skip_frame = state
                skip_state = state
            yield from emit(self._decode(packet))
        if remaining:
            raise VideoError(
                f"video is truncated: {len(remaining)} wanted frame(s) could not be decoded (first: {remaining[0]}, "
                f"container says {self.total} frames)",
                self.source,
            )


def _with_flush(packets: Iterator[Any]) -> Iterator[Any]:
    """The packets, then ``None`` (the decoder flush)."""
    yield from packets
    yield None
