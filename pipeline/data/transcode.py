"""Re-encode one video into the training format: short side, short fixed GOP, no audio, fast-start mp4 (no Ray).

    info = transcode(src, "/tmp/out.mp4", Encoding(short_side=256, gop=16, crf=23))

Why: a web video's GOP is 60-250 frames, so a sparse 8x32 clip decodes ~30-40 frames per frame it
keeps (`decode.Video.stats`). The copy has a keyframe every 24 frames and 11 non-reference
B-frames between its references (I and P only: no B pyramid), so a wanted frame costs its GOP's
I/P frames up to the next reference plus itself: ~3 decoded per kept; a 256 short side has half the
pixels of 360p, and x264's fastdecode (CAVLC, no deblocking) cuts the per-frame cost
(docs/BENCHMARKS.md "Feed").

Frame-exact: frame i of the copy is frame i of the source (`decode.Video.read` semantics) at the
same time from frame 0. Every source index 0..num_frames-1 is written once, with the source's
presentation time of that index (`Timeline.target_pts` - frame 0's pts, in the source's time
base): constant-frame-rate sources stay constant at the same rate, variable-frame-rate sources
keep their irregular times. A gap in the source's timestamps is filled with the frame showing at
that time (as `read` does), a repeated index keeps its first frame, and frame 0 starts at time 0
(clip times, `start_sec` / `end_sec`, count from frame 0 in both). Frames stay in stored
orientation; the source's display rotation is copied. The short side is `short_side` (never
upscaled), sizes rounded to even (4:2:0), resized like `decode` resizes (OpenCV INTER_LINEAR from
rgb24), so reading the copy at its own short side gives the source's frames at that size within
the codec's loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2

from pipeline.data.decode import MAX_PIXELS, DecodeError, Source, Video
from pipeline.data.timeline import Timeline

FALLBACK_CODECS = ("libx264", "libopenh264", "h264")  # H.264 encoders, most preferred first


@dataclass
class Encoding:
    """How videos are re-encoded (defaults chosen by `bench/feed.py --sweep`, docs/BENCHMARKS.md)."""

    short_side: int = 256  # short side of the copy in pixels (never upscaled; >= the training short side you use)
    gop: int = 24  # keyframe every this many frames (fixed, no scene cuts): a sparse clip decodes <= gop frames per frame kept
    crf: int = 23  # libx264 constant rate factor: lower is better quality and more bytes (23: >= 35 dB PSNR with 11 B-frames)
    preset: str = "veryfast"  # libx264 preset (encode speed vs bytes; slower presets cost more decode here)
    bframes: int = 11  # at most this many B-frames between references (non-reference: skipped undecoded when not wanted)
    b_pyramid: bool = False  # let x264 keep some B-frames as references (fewer bytes, ~1.6x the decode work per clip)
    fastdecode: bool = True  # libx264 tune=fastdecode (CAVLC, no deblocking): ~40 % less decode CPU for ~15 % more bytes
    codec: str = "libx264"  # PyAV encoder; must be in av.codecs_available (crf/preset/tune are libx264's)
    decode_threads: int = 1  # PyAV decoder threads per source video
    encode_threads: int = 1  # encoder threads per video (one Ray task per core: keep 1)
    max_pixels: int | None = MAX_PIXELS  # width x height above which a source is an error row; None: no cap

    def __post_init__(self) -> None:
        for name in ("short_side", "gop", "decode_threads", "encode_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")
        if self.bframes < 0:
            raise ValueError(f"bframes must be >= 0, got {self.bframes}")


def encoder_available(codec: str) -> bool:
    """Whether this PyAV build can encode with `codec`."""
    if codec not in av.codecs_available:
        return False
    try:
        av.codec.Codec(codec, "w")
    except (ValueError, av.FFmpegError):
        return False
    return True


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to `short_side` (never up), both even."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


@dataclass
class Transcoded:
    """What `transcode` wrote: frames, size, bytes, and the source's facts it kept."""

    frames: int
    width: int
    height: int
    bytes: int
    source_frames: int
    source_width: int
    source_height: int
    fps: float
    duration: float
    filled: int  # indices written with the frame before them (gaps in the source's timestamps)
    truncated: bool  # the source was cut: the copy holds the frames before the cut

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _open_encoder(dst: str, video: Video, enc: Encoding, size: tuple[int, int]):
    """The mp4 (fast start) and its one H.264 stream in the source's time base."""
    tl, info = video.timeline, video.info
    out = av.open(dst, "w", format="mp4", options={"movflags": "+faststart"})
    stream = out.add_stream(enc.codec, rate=Fraction(tl.rate).limit_denominator(1_000_000))
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = tl.time_base
    stream.codec_context.time_base = tl.time_base
    stream.codec_context.gop_size = enc.gop
    stream.codec_context.max_b_frames = enc.bframes
    stream.thread_count = enc.encode_threads
    if enc.codec == "libx264":
        # fixed GOP; up to `bframes` B-frames in a row (x264's fast adaptive choice, b-adapt=1: the
        # fixed pattern, b-adapt=0, misplaces a variable-frame-rate copy's end time); references are
        # only I/P unless b_pyramid, so a wanted frame costs its GOP's I/P frames up to the next
        # reference plus itself, and unwanted B-frames are never decoded
        params = (f"keyint={enc.gop}:min-keyint={enc.gop}:scenecut=0:bframes={enc.bframes}:open-gop=0:"
                  f"b-adapt=1:b-pyramid={'normal' if enc.b_pyramid else 'none'}")
        stream.options = {"crf": str(enc.crf), "preset": enc.preset, "x264-params": params,
                          **({"tune": "fastdecode"} if enc.fastdecode else {})}
    if info.rotation:
        stream.set_display_rotation(info.rotation)
    return out, stream


def _pts(tl: Timeline, i: int) -> int:
    """Presentation time of source frame i from frame 0, in the source's time base (i ==
    num_frames: the end of the last frame)."""
    if i >= tl.num_frames and tl.end_pts is not None:
        return tl.end_pts - tl.first_pts
    return tl.target_pts(i) - tl.first_pts


def transcode(src: Source, dst: str, enc: Encoding) -> Transcoded:
    """Re-encode the video `src` (path or seekable file object) into the local file `dst`.

    Raises DecodeError (stage open/stream/probe/decode for the source, `encode` when the encoder
    refuses) for bad input; `dst` may then hold a partial file (the caller writes to a temporary
    name).
    """
    with Video(src, threads=enc.decode_threads, max_pixels=enc.max_pixels) as video:
        tl, info = video.timeline, video.info
        w, h = output_size(info.width, info.height, enc.short_side)
        out, stream = _open_encoder(dst, video, enc, (w, h))
        written = filled = 0
        pending: list[tuple[av.VideoFrame, int]] = []  # the last frame waits: it is encoded as a keyframe

        def encode(frame: av.VideoFrame, i: int, last: bool = False) -> None:
            rgb = frame.to_ndarray(format="rgb24", threads=1)  # [H, W, 3] stored orientation
            if (rgb.shape[1], rgb.shape[0]) != (w, h):  # resized as `decode` resizes (OpenCV linear)
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
            small = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            small.pts, small.duration = _pts(tl, i), _pts(tl, i + 1) - _pts(tl, i)
            small.time_base = tl.time_base
            # the encoder places keyframes, except the last frame: a keyframe is last in decode
            # order too, so the mp4's last sample duration is its own (mp4 keeps durations in
            # decode order: after a B-frame run the copy's end time would be another frame's)
            small.pict_type = av.video.frame.PictureType.I if last else av.video.frame.PictureType.NONE
            for packet in stream.encode(small):
                out.mux(packet)

        def put(frame: av.VideoFrame, i: int) -> None:
            if pending:
                encode(*pending.pop())
            pending.append((frame, i))

        try:
            prev = None
            for k, frame in video.presented():
                if k < written:
                    continue  # a repeated index: `read` keeps its first frame
                while prev is not None and written < k:  # a gap: the frame showing at that time
                    put(prev, written)
                    written, filled = written + 1, filled + 1
                while written <= k:  # (before frame 0 only at a start gap) this frame
                    put(frame, written)
                    written += 1
                prev = frame
            if pending:
                encode(*pending.pop(), last=True)
            for packet in stream.encode():
                out.mux(packet)
        except av.FFmpegError as e:
            raise DecodeError("encode", f"{enc.codec}: {e}") from e
        finally:
            try:
                out.close()
            except av.FFmpegError:
                pass  # already failing: the first error is the one to report
    if written == 0:
        raise DecodeError("decode", "no decodable frames")
    return Transcoded(frames=written, width=w, height=h, bytes=os.path.getsize(dst),
                      source_frames=info.num_frames, source_width=info.width, source_height=info.height,
                      fps=info.fps, duration=info.duration, filled=filled, truncated=info.truncated)
