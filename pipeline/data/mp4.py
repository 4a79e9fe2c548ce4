"""The top-level box layout of an MP4/QuickTime file, read from its box headers only (no Ray).

FFmpeg's mp4 demuxer needs the `moov` box (the index of every sample). A recorder or an encoder
without fast start writes it at the end, so a cut download of such a file has all its media data
and no index: `mp4_without_index` tells that apart from a file that is no MP4 at all.
"""

from __future__ import annotations

_BOX_START = (b"ftyp", b"mdat", b"wide", b"free", b"skip", b"pdin")  # how an MP4/QuickTime file begins


def mp4_without_index(target: object, size: int, max_boxes: int = 64) -> bool:
    """Whether a file PyAV refused is an MP4/QuickTime file whose top-level boxes hold no `moov`
    (the index FFmpeg's mp4 demuxer needs): written with the index at the end, then cut. Reads
    only box headers; a file object is left at offset 0."""
    f = open(target, "rb") if isinstance(target, str) else target
    try:
        pos, first = 0, None
        for _ in range(max_boxes):
            if pos + 8 > size:
                break
            f.seek(pos)
            head = f.read(16)
            box_size, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if len(head) < 8 or not all(48 <= c < 123 and chr(c).isalnum() for c in kind):
                return False  # not a box: not an ISO media file at all
            first = first or kind
            if kind == b"moov":
                return False
            if box_size == 1 and len(head) >= 16:
                box_size = int.from_bytes(head[8:16], "big")
            elif box_size == 0:  # the box runs to the end of the file
                break
            if box_size < 8:
                return False
            pos += box_size
        return first in _BOX_START
    except (OSError, ValueError):
        return False
    finally:
        if f is not target:
            f.close()
        else:
            f.seek(0)
