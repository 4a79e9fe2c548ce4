"""Frame-exact video decoding with PyAV (no Ray).

`probe(src)` reads stream facts; `decode(src, frame_indices)` returns exactly the frames asked for
as uint8 ``[T, H, W, 3]`` RGB, upright (rotation metadata applied); `Video` keeps one container
open for both. Frame ``i`` is the i-th frame a plain sequential decode presents; the frame index
and the clocks (`Video.time_of`, `Video.index_at`) live in `pipeline.data.timeline`, and
docs/DECODE.md lists the rules per container.

Input limits (each a DecodeError('probe', reason)): more than `max_pixels` pixels per frame
(default `MAX_PIXELS`, admits 4096x2304; checked from the header, before any frame is decoded),
still images and single-frame image codecs, a frame rate (from the timestamps) outside
[`MIN_FPS`, `MAX_FPS`] (a broken time base or timescale). A truncated file is read up to its last complete packet (`VideoInfo.truncated`).

Reading seeks to the keyframe at or before the first wanted frame, decodes forward, skips
unwanted non-reference H.264 packets and stops after the last wanted frame; a seek that lands
past its target (first GOP, non-zero or negative start times, open GOPs) backs off, down to a
seek to the stream start (`pipeline.data.seek`). Kept frames are converted to rgb24 at native
size, rotated, then resized with OpenCV INTER_LINEAR (faster than a scaled swscale reformat).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Iterator, Sequence, Union

import av
import numpy as np

from pipeline.data.errors import DECODE, INDEX, OPEN, PROBE, STREAM
from pipeline.data.mp4 import mp4_without_index
from pipeline.data.seek import (DecodeError, ReadStats, StartPass, decoded_frames, make_skip, norm_rotation,
                                read_start, seek_decode, seek_start)
from pipeline.data.timeline import Timeline, index_is_regular

log = logging.getLogger(__name__)

Source = Union[str, os.PathLike, BinaryIO]

# Largest decoded frame accepted by default, in pixels (width x height): admits 4K UHD
# (3840x2160) and DCI 4K (4096x2160). A decoder holds several frames of this size (reference
# frames, threads), so this bounds a worker's memory; pass max_pixels=None to lift it.
MAX_PIXELS = 4096 * 2304
MIN_FPS, MAX_FPS = 1.0, 1000.0  # outside this, the stream's time base or timescale is broken
# codecs that store still images: a stream of these with fewer than 2 frames is a picture
IMAGE_CODECS = frozenset({"png", "apng", "mjpeg", "jpeg2000", "jpegls", "bmp", "tiff", "webp",
                          "gif", "ppm", "pgm", "pbm", "pam", "targa", "dpx", "exr", "qoi"})
# how many of a container index's last entries are checked against the file size
_INDEX_TAIL_CHECK = 8


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video's first video stream.

    num_frames: presented frames that decode (container index, else a packet scan); for a
    truncated file, those before the cut. fps: the stream rate for constant frame rate, else
    num_frames / duration (real average). duration: seconds of the presented timeline (frame 0's
    start to the last frame's end). width/height: stored (coded) size, before rotation.
    rotation: degrees counter-clockwise the stored frames are rotated for display (0/90/180/-90);
    decode() applies it, so output frames are upright.
    start_time: seconds of frame 0's pts. keyframes: frame indices of keyframes when known
    cheaply (container index or packet scan), else empty. frame_count_source: "metadata"
    (container index) or "scan" (packet scan). truncated: the file ends inside the video data
    (only the frames before the cut count). declared_frames: the container's frame count (0 if
    none). container: the demuxer's name.
    """

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int = 0
    start_time: float = 0.0
    codec: str = ""
    keyframes: tuple[int, ...] = ()
    variable_frame_rate: bool = False
    frame_count_source: str = "metadata"
    truncated: bool = False
    declared_frames: int = 0
    container: str = ""

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of upright output frames."""
        if self.rotation % 180 != 0:
            return self.height, self.width
        return self.width, self.height


# ----------------------------------------------------------------------------- opening


def _open(src: Source, max_pixels: int | None = None) -> tuple[av.container.InputContainer, int]:
    """Open a path or binary file object -> (container, file size in bytes); failures raise
    DecodeError('open', ...). `max_pixels` also goes to the decoders FFmpeg opens while probing
    the streams (they decode a few frames), so they refuse bigger frames instead of allocating."""
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.exists(path):
            raise DecodeError(OPEN, f"file not found: {path}")
        size = os.path.getsize(path)
        if size == 0:
            raise DecodeError(OPEN, f"empty file (0 bytes): {path}")
        target: object = path
    else:
        if not hasattr(src, "read") or not hasattr(src, "seek"):
            raise DecodeError(OPEN, f"source must be a path or a seekable binary file, got {type(src)!r}")
        try:
            src.seek(0, io.SEEK_END)
            size = src.tell()
            src.seek(0)
        except (OSError, ValueError) as e:
            raise DecodeError(OPEN, f"file object is not seekable: {e}") from e
        if size == 0:
            raise DecodeError(OPEN, "empty file (0 bytes)")
        target = src
    try:
        options = {"max_pixels": str(int(max_pixels))} if max_pixels is not None else None
        return av.open(target, mode="r", metadata_errors="ignore", options=options), size
    except av.FFmpegError as e:
        reason = e.strerror or str(e)
        if mp4_without_index(target, size):
            raise DecodeError(OPEN, "truncated or missing its index (an MP4/QuickTime file without its moov "
                                    f"box: a cut download or an unfinished recording): {reason}") from e
        raise DecodeError(OPEN, f"not a video file (PyAV could not read a container): {reason}") from e
    except (OSError, ValueError) as e:
        raise DecodeError(OPEN, f"cannot open: {e}") from e


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise DecodeError(STREAM, f"no video stream (streams: {', '.join(kinds)})")
    return container.streams.video[0]


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise DecodeError(PROBE, f"frame size {width}x{height} = {width * height} pixels exceeds "
                                   f"the cap of {max_pixels} (max_pixels)")


def _check_stream(container, stream, max_pixels: int | None) -> Fraction:
    """Reject what is not a decodable video before decoding anything; returns the stream rate."""
    fmt = container.format.name or ""
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise DecodeError(PROBE, f"a still image ({fmt}), not a video")
    ctx = stream.codec_context
    _check_pixels(int(ctx.width or 0), int(ctx.height or 0), max_pixels)
    tb = stream.time_base
    if tb is None or tb <= 0:
        raise DecodeError(PROBE, f"invalid time base {tb}")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise DecodeError(PROBE, "video stream has no frame rate")
    return Fraction(rate)  # nominal: checked against the timestamps by the timeline


# ----------------------------------------------------------------------------- frame index


def _index_complete(entries, file_size: int) -> bool:
    """The last index entries' bytes lie inside the file (not cut off)."""
    n = len(entries)
    return all(entries[j].pos + entries[j].size <= file_size
               for j in range(max(0, n - _INDEX_TAIL_CHECK), n) if entries[j].pos >= 0)


def _build_timeline(container, stream, rate: Fraction, file_size: int) -> tuple[Timeline, StartPass, str]:
    """The frame index: from a complete, regular container index (constant frame rate), else
    from a packet scan. Returns (timeline, what the start pass found, frame count source)."""
    tb = stream.time_base
    n_meta = int(stream.frames or 0)
    entries = stream.index_entries
    if (n_meta > 1 and entries is not None and len(entries) == n_meta and not entries[0].is_discard
            and _index_complete(entries, file_size) and index_is_regular(entries, n_meta, rate, tb)):
        start = read_start(container, stream, file_size, scan=False)
        first = _first_pts(start)
        shift = first - entries[0].timestamp  # index dts -> pts (decoder delay)
        return Timeline.regular(first, tb, rate, n_meta, entries=entries, dts_shift=shift), start, "metadata"
    start = read_start(container, stream, file_size, scan=True)
    first = _first_pts(start)
    if not any(p >= first for p in start.pts):
        raise DecodeError(PROBE, "no complete packets")
    tl = Timeline.from_table(start.pts, start.keys, tb, rate, first, start.last_duration)
    declared = _declared_seconds(container, stream)  # a length, or an end time (Matroska)
    end = max(tl.duration, float(tl.first_pts * tb) + tl.duration)
    if n_meta > start.packets or declared > end + max(0.5, 2 / float(rate)):
        start.truncated = True  # the header promised more frames or time than the file holds
    return tl, start, "scan"


def _declared_seconds(container, stream) -> float:
    """The stream's length as its headers declare it (0 if unknown): the stream duration, a
    Matroska DURATION tag, or the container's duration when it has no other stream."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            pass
    if len(container.streams) == 1 and container.duration:
        return container.duration / av.time_base
    return 0.0


def _first_pts(start: StartPass) -> int:
    if start.first.pts is None:
        raise DecodeError(DECODE, "decoded frame has no timestamp")
    return start.first.pts


# ----------------------------------------------------------------------------- Video


class Video:
    """One open video: `info` and `read(indices)` share a single container and timeline.

        with Video(src, threads=1) as video:   # path or seekable binary file object
            info = video.info                  # stream facts (checked on open)
            frames, n_missing = video.read([0, 32, 64], size=224)
            t0 = video.time_of(32)             # seconds from frame 0 to frame 32

    `probe(src)` and `decode(src, indices)` are the one-shot forms. Bad input raises DecodeError
    with stage open/stream/probe/seek/decode/index. `max_pixels` caps width x height (None: no
    cap), checked before any frame is decoded.
    """

    def __init__(self, src: Source, *, threads: int = 1, max_pixels: int | None = MAX_PIXELS):
        self._container, self._file_size = _open(src, max_pixels)
        try:
            self._stream = stream = _video_stream(self._container)
            rate = _check_stream(self._container, stream, max_pixels)
            ctx = stream.codec_context  # decoder threads are fixed before the codec opens
            ctx.thread_count = max(1, int(threads))
            if threads > 1:
                ctx.thread_type = "AUTO"
            self._tl, start, how = _build_timeline(self._container, stream, rate, self._file_size)
            self._info = self._make_info(start, how, max_pixels)  # keyframes: filled on first use
            self._truncated = start.truncated
            self._info_done = False
            self.stats = ReadStats()  # decode work of this open (frames decoded / kept by reads)
        except BaseException:
            self._container.close()
            raise

    def _make_info(self, start: StartPass, how: str, max_pixels: int | None) -> VideoInfo:
        stream, tl, first = self._stream, self._tl, start.first
        width = int(stream.codec_context.width or first.width)
        height = int(stream.codec_context.height or first.height)
        _check_pixels(width, height, max_pixels)
        codec = stream.codec_context.name
        if codec in IMAGE_CODECS and tl.num_frames < 2:
            raise DecodeError(PROBE, f"a single {codec} image, not a video")
        if not MIN_FPS <= tl.fps <= MAX_FPS:
            raise DecodeError(PROBE, f"frame rate {tl.fps:.4g} fps outside [{MIN_FPS:g}, {MAX_FPS:g}] "
                                       f"(time base {tl.time_base}: broken timescale or header)")
        if first.is_corrupt:
            raise DecodeError(DECODE, "first frame is corrupt (the decoder concealed errors)")
        return VideoInfo(
            num_frames=tl.num_frames, fps=tl.fps, duration=tl.duration, width=width, height=height,
            rotation=norm_rotation(first.rotation), start_time=float(tl.first_pts * tl.time_base),
            codec=codec, variable_frame_rate=tl.vfr,
            frame_count_source=how, truncated=start.truncated, declared_frames=int(stream.frames or 0),
            container=self._container.format.name or "")

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def info(self) -> VideoInfo:
        """The stream facts (read on open: the first frame is decoded to check it)."""
        if not self._info_done:  # listing keyframes walks the index: only when asked
            self._info = dataclasses.replace(self._info, keyframes=self._tl.keyframe_indices())
            self._info_done = True
        return self._info

    @property
    def timeline(self) -> Timeline:
        return self._tl

    def time_of(self, i: int) -> float:
        """Seconds from frame 0's presentation to frame `i`'s (`i == num_frames`: the end of the
        last frame). Constant frame rate: ``i / fps``; variable: real presentation times."""
        return self._tl.time_of(i)

    def index_at(self, seconds: float) -> int:
        """The frame index shown at `seconds` from frame 0, clamped to [0, num_frames]
        (constant frame rate: ``round(seconds * fps)``)."""
        return self._tl.index_at(seconds)

    def read(self, frame_indices: Sequence[int], *, size: int | None = None,
             skip_nonref: bool = True) -> tuple[np.ndarray, int]:
        """The frames `frame_indices` (see `decode`) and how many were past the stream's real end.

        Such frames (the stream ended before the frame count) are filled with the last decoded
        frame; the count lets callers flag them like padding.
        """
        indices = [int(i) for i in frame_indices]
        n = self._tl.num_frames
        if not indices:
            raise DecodeError(INDEX, "no frame indices requested")
        if min(indices) < 0:
            raise DecodeError(INDEX, f"negative frame index {min(indices)}")
        if max(indices) >= n:
            raise DecodeError(INDEX, f"frame index {max(indices)} beyond the video's {n} frames")
        got, tail = seek_decode(self._container, self._stream, self._tl, sorted(set(indices)), size,
                                skip_nonref, self._truncated, self._file_size, self.stats)
        missing = {i for i in set(indices) if i not in got}
        if missing:
            if tail is None:
                raise DecodeError(DECODE, "no decodable frames (truncated or corrupt)")
            for i in missing:
                got[i] = tail
            log.warning("%d requested frame(s) past the real end of the stream; repeated the last frame",
                        len(missing))
        n_missing = sum(1 for i in indices if i in missing)
        return np.stack([got[i] for i in indices]), n_missing  # [T, H, W, 3]


    def presented(self) -> Iterator[tuple[int, "av.VideoFrame"]]:
        """Every frame of a sequential decode from frame 0 on, as (frame index, PyAV frame), in
        order; frames outside [0, num_frames) (a truncated tail) are left out. Indices may skip
        (a gap in the timestamps) or repeat; `read` would give a skipped index the frame before it
        and a repeated index its first frame. Adds to `stats` like `read`."""
        tl, stream = self._tl, self._stream
        try:
            seek_start(self._container, stream, tl)
            skip = make_skip(stream, tl, set(), False, self._truncated, self._file_size)
            for frame in decoded_frames(self._container, stream, skip, self._truncated, stats=self.stats):
                self.stats.decoded += 1
                if frame.pts is None:
                    raise DecodeError(DECODE, "decoded frame has no timestamp")
                k = tl.index_of(frame.pts)
                if k >= tl.num_frames:
                    return
                if k >= 0:
                    self.stats.kept += 1
                    yield k, frame
        except av.FFmpegError as e:
            raise DecodeError(DECODE, f"undecodable frames: {e}") from e


def probe(src: Source, *, max_pixels: int | None = MAX_PIXELS) -> VideoInfo:
    """Read a video's stream facts; decodes the first frame to check it and read its rotation.

    Raises DecodeError with stage open/stream/probe/decode for bad input.
    """
    with Video(src, max_pixels=max_pixels) as video:
        return video.info


def decode_with_report(src: Source, frame_indices: Sequence[int], *, threads: int = 1,
                       size: int | None = None, skip_nonref: bool = True,
                       max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, int]:
    """Like `decode`, also returning how many requested frames were past the stream's real end."""
    with Video(src, threads=threads, max_pixels=max_pixels) as video:
        return video.read(frame_indices, size=size, skip_nonref=skip_nonref)


def decode(src: Source, frame_indices: Sequence[int], *, threads: int = 1,
           size: int | None = None, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode exactly the frames `frame_indices` (any order, repeats allowed) -> uint8 [T, H, W, 3].

    `src` is a local path or a seekable binary file object (e.g. `fsspec.open(uri, "rb")`).
    Frames are RGB, upright (rotation metadata applied) and, when `size` is given, resized so the
    short side equals `size` (OpenCV INTER_LINEAR). `threads` is the decoder's thread count;
    `max_pixels` caps the frame size (see `MAX_PIXELS`). Indices beyond the frame count raise
    DecodeError('index'); if the stream really ends before the count, the missing frames repeat
    the last decoded one (logged; see `decode_with_report` for the count). Bad input raises
    DecodeError with a stage.
    """
    frames, _ = decode_with_report(src, frame_indices, threads=threads, size=size, max_pixels=max_pixels)
    return frames
