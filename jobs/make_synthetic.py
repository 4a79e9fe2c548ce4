"""Write the synthetic motion-direction corpus (real H.264 MP4s) to a folder or URI.

Short labelled videos of a flat-coloured object moving left/right/up/down (train.csv, val.csv),
and optionally long videos of several labelled segments (long.csv with a `segments` column).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from pipeline.cli import parse_job
from pipeline.config import ConfigError
from pipeline.data.synthetic import CLASSES, make_corpus

EXAMPLES = """examples:
  python -m jobs.make_synthetic --output /tmp/synth --videos 64 --long-videos 2
  python -m jobs.make_synthetic --output s3://bucket/synth --videos 200 --seconds 3"""


@dataclass
class SyntheticConfig:
    output: str = ""  # output folder or URI: local, s3://, gs://, file:// (required)
    videos: int = 0  # number of short labelled videos (required)
    long_videos: int = 0  # number of long multi-segment videos
    seconds: float = 2.0  # length of each short video
    size: str = "64x48"  # WxH of short videos (even)
    fps: float = 30.0
    long_segments: int = 4  # labelled segments per long video
    segment_seconds: float = 15.0  # seconds per long-video segment
    long_size: str = "64x48"  # WxH of long videos (even)
    long_fps: float = 15.0
    val_fraction: float = 0.25  # share of short videos in val.csv
    textured: bool = False  # textured object and background (harder to learn) instead of flat colours
    seed: int = 0


def _size(name: str, text: str) -> tuple[int, int]:
    """"64x48" -> (64, 48)."""
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit()):
        raise ConfigError(f"{name}: expected WxH such as 64x48, got {text!r}")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    t0 = time.time()
    try:
        cfg, _ = parse_job(SyntheticConfig, argv, prog="python -m jobs.make_synthetic", doc=__doc__,
                           examples=EXAMPLES, required=("output",))
        if cfg.videos < 1:
            raise ConfigError("--videos: must be >= 1 (required)")
        manifest = make_corpus(cfg.output, videos=cfg.videos, long_videos=cfg.long_videos,
                               seconds=cfg.seconds, size=_size("size", cfg.size), seed=cfg.seed, fps=cfg.fps,
                               val_fraction=cfg.val_fraction, long_segments=cfg.long_segments,
                               segment_seconds=cfg.segment_seconds, long_size=_size("long_size", cfg.long_size),
                               long_fps=cfg.long_fps, textured=cfg.textured)
    except ValueError as e:  # ConfigError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {cfg.videos} videos + {cfg.long_videos} long videos ({len(CLASSES)} classes: "
          f"{', '.join(CLASSES)}) in {time.time() - t0:.1f}s; manifest: {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
