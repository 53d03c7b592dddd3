"""H.264/HEVC bitstream reading for the video decoder: the NAL units of an access unit (length-prefixed AVCC/HVCC
or Annex B) and whether a keyframe packet starts with an IDR picture (a closed entry point that seeking may target).
"""

from __future__ import annotations

from typing import Callable


def nal_units(data: bytes, length_size: int | None):
    """NAL unit payloads of an H.264/HEVC access unit (length-prefixed AVCC/HVCC, or Annex B when length_size is None)."""
    if length_size:
        i = 0
        while i + length_size <= len(data):
            n = int.from_bytes(data[i : i + length_size], "big")
            i += length_size
            if n <= 0 or i + n > len(data):
                return
            yield data[i : i + n]
            i += n
    else:
        starts = []
        i = data.find(b"\x00\x00\x01")
        while i >= 0:
            starts.append(i + 3)
            i = data.find(b"\x00\x00\x01", i + 3)
        for a, b in zip(starts, starts[1:] + [len(data) + 3]):
            yield data[a : b - 3]


def idr_checker(codec: str, extradata: bytes | None) -> Callable[[bytes], bool] | None:
    """A function telling whether an H.264/HEVC keyframe packet starts with an IDR picture (a closed entry point:
    nothing after it references anything before it); None for codecs without that notion."""
    ext = bytes(extradata or b"")
    if codec == "h264":
        length = (ext[4] & 3) + 1 if len(ext) > 4 and ext[0] == 1 else None
        vcl, idr = set(range(1, 6)), {5}

        def nal_type(nal: bytes) -> int:
            return nal[0] & 0x1F

    elif codec == "hevc":
        length = (ext[21] & 3) + 1 if len(ext) > 21 and ext[0] == 1 else None
        vcl, idr = set(range(0, 32)), {19, 20}

        def nal_type(nal: bytes) -> int:
            return (nal[0] >> 1) & 0x3F

    else:
        return None

    def is_idr(data: bytes) -> bool:
        for nal in nal_units(data, length):
            if nal:
                t = nal_type(nal)
                if t in vcl:
                    return t in idr
        return False

    return is_idr
