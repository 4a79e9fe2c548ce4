"""The frame index of one video stream: frame index <-> pts, keyframes, clocks (pure Python).

Frame ``i`` is the i-th frame a plain sequential decode presents; frame 0 is the first frame
the decoder presents, whatever the container's start metadata says (docs/DECODE.md).

Two kinds of timeline, built by `pipeline.data.decode` from what the container offers:
- regular (constant frame rate, full container index): frame ``i`` has pts
  ``first_pts + round(i / rate / time_base)``; a pts ``p`` is frame
  ``round((p - first_pts) * time_base * rate)`` (exact integer math);
- table (a packet scan: Matroska/WebM/MPEG-TS, variable frame rate, truncated files): the
  sorted pts of every presented frame; frame ``i`` is the i-th of them.

Clocks: a constant-frame-rate stream reports ``time_of(i) = i / fps`` with ``fps`` the stream
rate; a variable-frame-rate stream reports presentation times (pts - pts of frame 0), its
``fps`` is ``num_frames / duration`` and its duration ends where the last frame ends.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

# a frame's time may differ from the next frame's start by this much and still count as that
# frame (seconds -> frame lookups from arithmetic such as start + k * step)
_TIME_TOLERANCE = 1e-6


def index_is_regular(entries, n: int, rate: Fraction, tb: Fraction, samples: int = 64) -> bool:
    """True when a container index's timestamps (dts, `entries[j].timestamp`) step by one frame.

    Checks `samples` evenly spaced entries (reading all of them costs ~1 us each: 18 ms for a
    10-minute video, a third of a clip's decode).
    """
    num, den = _frame_step(rate, tb)  # one frame = num / den ticks (integer math: Fractions cost ~10 us each)
    t0 = entries[0].timestamp
    for j in sorted({round(k * (n - 1) / samples) for k in range(samples + 1)}):
        if abs((entries[j].timestamp - t0) * den - j * num) > den:
            return False
    return True


def _frame_step(rate: Fraction, tb: Fraction) -> tuple[int, int]:
    """One frame of `rate` in ticks of `tb`, as (numerator, denominator)."""
    return rate.denominator * tb.denominator, rate.numerator * tb.numerator


def _round_half_even(num: int, den: int) -> int:
    """round(Fraction(num, den)) (half to even) in integers; den > 0."""
    q, r = divmod(num, den)
    return q + 1 if 2 * r > den or (2 * r == den and q % 2) else q


def table_is_regular(pts: Sequence[int], rate: Fraction, tb: Fraction) -> bool:
    """True when consecutive pts step by one frame of `rate` (within one tick of rounding)."""
    num, den = _frame_step(rate, tb)
    return all(abs((b - a) * den - num) <= den for a, b in zip(pts, pts[1:]))


@dataclass
class Timeline:
    """Frame index <-> pts for one stream, keyframe lookup and clocks.

    Build with `Timeline.regular` or `Timeline.from_table`. `entries` is a container index
    (PyAV `stream.index_entries`: `.timestamp` in dts, `.search_timestamp`) used on demand for
    keyframe lookups; `dts_shift` turns its dts into pts (the decoder delay).
    """

    time_base: Fraction
    rate: Fraction  # the stream's frame rate
    first_pts: int  # pts of frame 0 (the first presented frame)
    num_frames: int
    pts_table: list[int] | None = None  # sorted pts of every presented frame (table timeline)
    key_pts: list[int] | None = None  # sorted pts of keyframes (table timeline)
    entries: object = None
    dts_shift: int = 0
    end_pts: int | None = None  # table timeline: where the last frame ends
    vfr: bool = False
    _times: list[float] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def regular(cls, first_pts: int, tb: Fraction, rate: Fraction, num_frames: int, *,
                entries=None, dts_shift: int = 0) -> "Timeline":
        return cls(time_base=tb, rate=rate, first_pts=first_pts, num_frames=num_frames,
                   entries=entries, dts_shift=dts_shift)

    @classmethod
    def from_table(cls, pts: Sequence[int], key_pts: Sequence[int], tb: Fraction, rate: Fraction,
                   first_pts: int, last_duration: int | None = None) -> "Timeline":
        """A table timeline from scanned packet pts; frames before `first_pts` (not presented by
        the decoder, e.g. leading frames it drops) are left out, duplicates counted once."""
        table = sorted({p for p in pts if p >= first_pts})
        if not table:
            raise ValueError("no frames at or after the first presented frame")
        keys = sorted({p for p in key_pts if p >= first_pts}) or [table[0]]
        if not last_duration or last_duration <= 0:
            steps = sorted(b - a for a, b in zip(table, table[1:]))
            last_duration = steps[len(steps) // 2] if steps else round(Fraction(1) / rate / tb)
        return cls(time_base=tb, rate=rate, first_pts=table[0], num_frames=len(table),
                   pts_table=table, key_pts=keys, end_pts=table[-1] + max(1, int(last_duration)),
                   vfr=not table_is_regular(table, rate, tb))

    # ------------------------------------------------------------------ index <-> pts

    def target_pts(self, i: int) -> int:
        """Presentation timestamp of frame i, in the stream's time base."""
        if self.pts_table is not None:
            return self.pts_table[min(max(i, 0), len(self.pts_table) - 1)]
        num, den = _frame_step(self.rate, self.time_base)
        return self.first_pts + _round_half_even(i * num, den)

    def index_of(self, pts: int) -> int:
        """Frame index of a decoded frame with this pts (may be < 0 or >= num_frames)."""
        if self.pts_table is not None:
            j = bisect.bisect_left(self.pts_table, pts)
            if j < len(self.pts_table) and self.pts_table[j] == pts:
                return j
            return j - 1  # not in the table (rare): the frame showing at that time
        num = (pts - self.first_pts) * self.time_base.numerator * self.rate.numerator
        den = self.time_base.denominator * self.rate.denominator
        return (2 * num + den) // (2 * den)

    def keyframe_before(self, i: int) -> int | None:
        """Index of the last keyframe at or before frame i (approximate for a container index),
        None if unknown."""
        pts = self.target_pts(i)
        if self.key_pts is not None:
            j = bisect.bisect_right(self.key_pts, pts) - 1
            return self.index_of(self.key_pts[j]) if j >= 0 else None
        if self.entries is not None:
            j = self.entries.search_timestamp(pts - self.dts_shift, backward=True)
            return self.index_of(self.entries[j].timestamp + self.dts_shift) if j >= 0 else None
        return None

    def keyframe_indices(self, limit: int = 4096) -> tuple[int, ...]:
        """Keyframe indices when cheap to list (at most `limit`), else ()."""
        if self.key_pts is not None:
            keys = self.key_pts
        elif self.entries is not None:
            keys, ts = [], None
            j = self.entries.search_timestamp(-(2**62), backward=False)
            while j >= 0 and len(keys) <= limit:
                ts = self.entries[j].timestamp
                keys.append(ts + self.dts_shift)
                j = self.entries.search_timestamp(ts + 1, backward=False)
        else:
            return ()
        if len(keys) > limit:
            return ()
        return tuple(sorted({min(max(self.index_of(p), 0), self.num_frames - 1) for p in keys}))

    # ------------------------------------------------------------------ clocks

    @property
    def fps(self) -> float:
        """The stream rate (constant frame rate), else num_frames / duration."""
        if not self.vfr:
            return float(self.rate)
        return self.num_frames / self.duration

    @property
    def duration(self) -> float:
        """Seconds from the start of frame 0 to the end of the last frame."""
        if not self.vfr:
            return self.num_frames / float(self.rate)
        return float((self.end_pts - self.first_pts) * self.time_base)

    def _frame_times(self) -> list[float]:
        if self._times is None:
            self._times = [float((p - self.first_pts) * self.time_base) for p in self.pts_table]
        return self._times

    def time_of(self, i: int) -> float:
        """Seconds from frame 0's presentation to frame i's (`i == num_frames`: the end of the
        last frame). Outside [0, num_frames] it extrapolates at the average rate."""
        if not self.vfr:
            return i / float(self.rate)
        if i < 0:
            return i / self.fps
        if i >= self.num_frames:
            return self.duration + (i - self.num_frames) / self.fps
        return self._frame_times()[i]

    def index_at(self, seconds: float) -> int:
        """The frame shown at `seconds` after frame 0, clamped to [0, num_frames]
        (constant frame rate: the nearest frame start, ``round(seconds * fps)``)."""
        n = self.num_frames
        if not self.vfr:
            return min(max(0, int(round(seconds * float(self.rate)))), n)
        if seconds >= self.duration - _TIME_TOLERANCE:
            return n
        j = bisect.bisect_right(self._frame_times(), seconds + _TIME_TOLERANCE) - 1
        return min(max(j, 0), n)
