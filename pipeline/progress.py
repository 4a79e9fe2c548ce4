"""Time left and durations for progress lines (no Ray, no torch)."""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """`42s`, `7m05s`, `3h12m` (`?` when unknown)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_seconds(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far (`done` of `total` units in `elapsed_s`); None before any."""
    if done <= 0 or elapsed_s <= 0:
        return None
    return max(0, total - done) * elapsed_s / done
