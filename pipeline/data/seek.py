"""Seek-decode: the wanted frames of an open PyAV container, by frame index (no Ray).

Used by `pipeline.data.decode.Video`: `read_start` (the first presented frame and a packet scan,
from the file's start without seeking) and `seek_decode` (`Video.read`).
Seeks backward to the keyframe at or before the first wanted frame, decodes forward converting
only kept frames, skips unwanted non-reference H.264 packets, re-seeks when the next keyframe is
more than `RESEEK_MIN_GAP` frames past the current position, and stops after the last wanted
frame. A seek that lands past its target backs off (32, 64, ... frames earlier), down to a seek
to the stream start; from there frame 0 is the first presented frame by definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import logging
import time

import av
import cv2
import numpy as np

from pipeline.data.timeline import Timeline
from pipeline.data.transforms import short_side_resize_frame

cv2.setNumThreads(1)
log = logging.getLogger(__name__)

# Re-seek to a keyframe only when it lies more than this many frames past the current position:
# closer, decoding on through the few frames between (unwanted non-reference ones skipped) costs
# less than a seek and a decoder flush (dense clips such as 96x4 cross a GOP every few frames).
RESEEK_MIN_GAP = 8
# Drain the decoder after the last wanted packet before a seek (whole-frame packets only): a
# reference frame leaves the reorder buffer only when the next one is decoded, so otherwise each
# seek costs one reference frame decoded for nothing (an I-frame where a GOP ends).
DRAIN_BEFORE_SEEK = True


class DecodeError(Exception):
    """A video could not be decoded. `stage` is one of open/stream/probe/seek/decode/index."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message

    def __reduce__(self):  # picklable across processes (Ray workers)
        return (DecodeError, (self.stage, self.message))


def norm_rotation(degrees) -> int:
    """Display rotation rounded to a multiple of 90, in (-180, 180]."""
    r = (int(round((degrees or 0) / 90.0)) * 90) % 360
    return r - 360 if r > 180 else r


def to_rgb(frame: av.VideoFrame, size: int | None) -> np.ndarray:
    """rgb24 at native size (one swscale thread), upright, then short side -> size (OpenCV)."""
    rgb = frame.to_ndarray(format="rgb24", threads=1)  # [H, W, 3]
    rot = norm_rotation(frame.rotation) % 360
    if rot:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rot // 90))  # counter-clockwise
    if size is not None:
        rgb = short_side_resize_frame(rgb, size)
    return rgb


def _nal_length_size(stream) -> int | None:
    """AVCC NAL length size for H.264 in mp4/mkv, or None (Annex B / other codecs)."""
    ctx = stream.codec_context
    if ctx.name != "h264":
        return None
    extra = ctx.extradata
    if not extra or len(extra) < 5 or extra[0] != 1:
        return None
    return (extra[4] & 3) + 1


def _is_non_reference(data: bytes, nal_len: int) -> bool:
    """True when every NAL unit of an AVCC H.264 packet has nal_ref_idc == 0."""
    pos, n = 0, len(data)
    seen = False
    while pos + nal_len < n:
        size = int.from_bytes(data[pos:pos + nal_len], "big")
        pos += nal_len
        if size <= 0 or pos + size > n:
            return False
        if (data[pos] >> 5) & 3:
            return False
        seen = True
        pos += size
    return seen


def decoded_frames(container, stream, skip=None, tolerate_demux_errors: bool = False, drain=None,
                   stats: ReadStats | None = None) -> Iterator[av.VideoFrame]:
    """Frames from the current demux position on; `skip(packet)` drops a packet undecoded. With
    `tolerate_demux_errors` (a truncated file) a demux error ends the stream (decoder flushed).
    `drain(packet)` true after a packet went in: flush the decoder's reorder buffer and stop (the
    caller seeks next; without it the frames come out only once the next packet is decoded).
    `stats` counts the packets sent to the decoder and the CPU seconds it took."""
    stats = stats or ReadStats()
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError:
            if not tolerate_demux_errors:
                raise
            yield from stream.codec_context.decode(None)
            return
        if skip is not None and packet.size and skip(packet):
            continue
        stats.packets += 1
        yield from stats.timed(packet.decode)
        if drain is not None and drain(packet):
            yield from stats.timed(stream.codec_context.decode)
            return


def incomplete(packet, file_size: int) -> bool:
    """The packet's bytes run past the end of the file (a cut download)."""
    return packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > file_size


@dataclass
class StartPass:
    """What one pass from the file's start found: the first presented frame, and (scan) the pts
    of every complete packet."""

    first: av.VideoFrame | None = None
    pts: list | None = None
    keys: list | None = None
    last_duration: int | None = None
    truncated: bool = False
    packets: int = 0  # complete packets scanned (discarded ones included)


@dataclass
class ReadStats:
    """Decode work of one open video, summed over its reads: frames the decoder produced and
    frames kept (converted to RGB). `decoded / kept` is the decode work per frame kept: ~1 for
    dense clips or short GOPs, ~GOP / 2 for one sparse frame per GOP."""

    decoded: int = 0
    kept: int = 0
    packets: int = 0  # packets sent to the decoder (what it decoded, output or not)
    decode_s: float = 0.0  # CPU seconds in the decoder (FFmpeg) for those packets

    def timed(self, decode) -> list:
        """`decode()`'s frames, its CPU time added to `decode_s`."""
        t0 = time.process_time()
        frames = decode()
        self.decode_s += time.process_time() - t0
        return frames


def read_start(container, stream, file_size: int, scan: bool) -> StartPass:
    """Demux from the open position (the file's start, no seek): decode until the first frame
    comes out and, with `scan`, collect every packet's pts (demux only, no more decoding)."""
    st = StartPass(pts=[] if scan else None, keys=[] if scan else None)
    max_pts, corrupt_tail = None, None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # end of stream: flush the decoder
                if st.first is None:
                    st.first = next(iter(stream.codec_context.decode(None)), None)
                continue
            if incomplete(packet, file_size):
                st.truncated = True
                continue
            if st.first is None:
                st.first = next(iter(packet.decode()), None)
                if st.first is not None and not scan:
                    break
            if not scan:
                continue
            corrupt_tail = None
            st.packets += 1
            if packet.pts is None or packet.is_discard:
                continue
            corrupt_tail = packet.pts if packet.is_corrupt else None
            st.pts.append(packet.pts)
            if packet.is_keyframe:
                st.keys.append(packet.pts)
            if max_pts is None or packet.pts > max_pts:
                max_pts, st.last_duration = packet.pts, packet.duration
    except av.FFmpegError as e:
        if st.first is None:
            raise DecodeError("decode", f"first frame undecodable: {e}") from e
        if not scan:
            raise DecodeError("probe", f"cannot read packets: {e}") from e
        log.warning("packet scan stopped early (%s): treating the file as truncated", e)
        st.truncated = True
    if corrupt_tail is not None:  # the last packet is cut short
        st.pts.remove(corrupt_tail)
        st.packets -= 1
        st.truncated = True
    if st.first is None:
        raise DecodeError("decode", "no decodable frames (truncated or corrupt)")
    return st



def seek_start(container, stream, tl: Timeline) -> None:
    """Seek to the start of the stream (frame 0's keyframe), whatever its start time."""
    targets = [min(0, tl.first_pts - round(1 / tl.time_base)), tl.first_pts]
    for j, ts in enumerate(targets):
        try:
            container.seek(ts, backward=True, any_frame=False, stream=stream)
            return
        except av.FFmpegError:
            if j == len(targets) - 1:
                raise


def make_skip(stream, tl: Timeline, wanted: set, skip_nonref: bool, truncated: bool, file_size: int):
    """The packet filter: unwanted non-reference H.264 packets; for a truncated file, packets
    cut short (not in the timeline's table: the scan left them out)."""
    nal_len = _nal_length_size(stream) if skip_nonref else None
    table = set(tl.pts_table) if truncated and tl.pts_table is not None else None
    if nal_len is None and not truncated:
        return None

    def skip(packet) -> bool:
        if truncated and (incomplete(packet, file_size) or (
                table is not None and packet.pts is not None and packet.pts > tl.first_pts
                and packet.pts not in table)):
            return True  # cut short: not a frame of the timeline
        if nal_len is None or packet.pts is None or packet.is_keyframe:
            return False
        if tl.index_of(packet.pts) in wanted:
            return False
        return _is_non_reference(bytes(packet), nal_len)

    return skip


class _Reader:
    """State of one `seek_decode` call: where the decoder is and what it has kept."""

    def __init__(self, container, stream, tl: Timeline, wanted: list[int], size: int | None,
                 skip, truncated: bool, stats: ReadStats, drain: bool = False):
        self.container, self.stream, self.tl, self.stats = container, stream, tl, stats
        self.wanted, self.size, self.skip, self.truncated = wanted, size, skip, truncated
        self.wanted_set = set(wanted)
        self.can_drain = drain  # flush the reorder buffer after the last wanted packet before a seek
        self.drained = False
        self.sent: set[int] = set()  # wanted frames whose packets went in since the last seek
        self.sent_max = -1
        self.scan = 0  # wanted[w:scan] are all sent or kept
        self.got: dict[int, np.ndarray] = {}
        self.w = 0  # position in `wanted`
        self.pos: int | None = None  # index of the last decoded frame; None = must seek
        self.frames: Iterator[av.VideoFrame] | None = None
        self.prev: tuple[int, av.VideoFrame] | None = None
        self.tail: np.ndarray | None = None
        self.seek_to = 0
        self.first = True
        self.backoff = 0  # extra frames to seek before a target when a seek landed too late

    def seek(self, target: int) -> None:
        self.seek_to = max(target - self.backoff, 0)
        if self.seek_to == 0:
            seek_start(self.container, self.stream, self.tl)
        else:
            self.container.seek(self.tl.target_pts(self.seek_to), backward=True, any_frame=False,
                                stream=self.stream)
        self.frames = decoded_frames(self.container, self.stream, self.skip, self.truncated,
                                     self.drain_now if self.can_drain else None, self.stats)
        self.pos, self.prev, self.first = -1, None, True
        self.sent, self.sent_max, self.drained, self.scan = set(), -1, False, self.w

    def back_off(self) -> bool:
        """Seek further back next time; False when already seeking from the stream start."""
        if self.seek_to == 0:
            return False
        self.backoff = max(2 * self.backoff, 32)
        self.pos = None
        return True

    def needs_seek(self, target: int) -> bool:
        """No position yet, or a keyframe more than RESEEK_MIN_GAP frames ahead at or before
        the target (re-seek is cheaper than decoding on to it) and a seek point past the last one
        (a seek can land before the keyframe the index names; seeking there again would loop)."""
        return self.pos is None or self.would_seek(target, self.pos)

    def would_seek(self, target: int, pos: int) -> bool:
        """`needs_seek` from position `pos`."""
        target = max(target - self.backoff, 0)
        if target <= pos + RESEEK_MIN_GAP or target <= self.seek_to:
            return False  # a seek for this point already landed where we are (or earlier)
        key = self.tl.keyframe_before(target)
        return key is not None and key > pos + RESEEK_MIN_GAP

    def drain_now(self, packet) -> bool:
        """True when `packet` (just sent to the decoder) completes the wanted frames before a seek:
        then the decoder is drained instead of decoding the next reference frame only to push them
        out of its reorder buffer (~1 frame saved per seek; an I-frame when a GOP ends there)."""
        if packet.pts is None or (k := self.tl.index_of(packet.pts)) not in self.wanted_set:
            return False
        self.sent.add(k)
        self.sent_max = max(self.sent_max, k)
        wanted, self.scan = self.wanted, max(self.scan, self.w)  # scan restarts at w on every seek
        while self.scan < len(wanted) and (wanted[self.scan] in self.sent or wanted[self.scan] in self.got):
            self.scan += 1
        if self.scan < len(wanted) and not self.would_seek(wanted[self.scan], self.sent_max):
            return False  # more wanted frames come before the next seek
        self.drained = True
        return True

    def keep(self, k: int, frame: av.VideoFrame) -> None:
        """Convert `frame` (index k) for every wanted index it stands for."""
        wanted, got, prev = self.wanted, self.got, self.prev
        while self.w < len(wanted) and wanted[self.w] <= k:
            t = wanted[self.w]
            if t == k:
                got[t] = to_rgb(frame, self.size)
            elif prev is not None and prev[0] < t:
                got[t] = to_rgb(prev[1], self.size)  # a gap in pts: the frame showing at t
            elif t not in got:
                got[t] = to_rgb(frame, self.size)  # before the first frame (start gap)
            else:
                self.stats.kept -= 1  # already kept: not a new conversion
            self.stats.kept += 1
            self.w += 1
        self.prev = (k, frame)

    def step(self) -> bool:
        """Decode one frame; False at the end of the stream."""
        target = self.wanted[self.w]
        if self.needs_seek(target):
            self.seek(target)
        frame = next(self.frames, None)
        self.stats.decoded += frame is not None
        if frame is None and self.drained:  # drained before a seek: seek on
            self.pos, self.drained = None, False
            if self.w < len(self.wanted) and self.wanted[self.w] <= self.sent_max:
                self.can_drain = False  # a wanted frame of this stretch did not come out: no more draining
            return True
        if frame is None:
            if self.prev is None and self.back_off():
                return True  # nothing after this seek: the stream ends earlier; find its end
            if self.prev is not None:
                self.tail = to_rgb(self.prev[1], self.size)
            return False  # remaining wanted frames are missing
        if frame.pts is None:
            raise DecodeError("decode", "decoded frame has no timestamp")
        k = self.tl.index_of(frame.pts)
        if self.first and k > target:
            # the seek landed after the target (first GOP, start time, index/pts mismatch)
            if not self.back_off():
                raise DecodeError("seek", f"frame {target} unreachable: decoding from the stream "
                                          f"start begins at frame {k}")
            return True
        self.first = False
        self.pos = k
        if self.wanted[self.w] <= k and frame.is_corrupt:
            # e.g. a leading frame of an open GOP: decode from an earlier keyframe
            if not self.back_off():
                raise DecodeError("decode", f"frame {k} is corrupt (the decoder concealed errors)")
            return True
        self.keep(k, frame)
        return True


def seek_decode(container, stream, tl: Timeline, wanted: list[int], size: int | None,
                skip_nonref: bool, truncated: bool = False, file_size: int = 0,
                stats: ReadStats | None = None) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Decode the sorted unique `wanted` frame indices with (smart) seeking.

    Returns ({index: rgb array}, the stream's last frame when it ended before all wanted frames);
    adds the frames decoded and kept to `stats`.
    """
    skip = make_skip(stream, tl, set(wanted), skip_nonref, truncated, file_size)
    # draining only where a packet is a whole frame (AVCC H.264: mp4, mkv, mov)
    drain = DRAIN_BEFORE_SEEK and skip_nonref and _nal_length_size(stream) is not None
    reader = _Reader(container, stream, tl, wanted, size, skip, truncated, stats or ReadStats(), drain)
    try:
        while reader.w < len(wanted) and reader.step():
            pass
    except av.FFmpegError as e:
        # never substitute frames for data the decoder rejected
        where = "" if not reader.got else f" after frame {reader.pos}"
        raise DecodeError("decode", f"undecodable frames{where}: {e}") from e
    return reader.got, reader.tail
