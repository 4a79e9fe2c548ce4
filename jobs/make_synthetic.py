"""Write the synthetic motion-direction corpus (real H.264 MP4s) to a folder or URI.

    python -m jobs.make_synthetic --output /tmp/synth --videos 64 --long-videos 2
    python -m jobs.make_synthetic --output s3://bucket/synth --videos 200 --seconds 3
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.data.synthetic import CLASSES, make_corpus


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="output folder or URI (s3://, gs://, file://)")
    p.add_argument("--videos", type=int, required=True, help="number of short labelled videos")
    p.add_argument("--long-videos", type=int, default=0, help="number of long multi-segment videos")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each short video")
    p.add_argument("--size", type=_size, default=(64, 48), help="WxH of short videos (even)")
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--long-segments", type=int, default=4)
    p.add_argument("--segment-seconds", type=float, default=15.0)
    p.add_argument("--long-size", type=_size, default=(64, 48))
    p.add_argument("--long-fps", type=float, default=15)
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--textured", action="store_true",
                   help="textured object and background (harder to learn) instead of flat colours")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.time()
    try:
        manifest = make_corpus(args.output, videos=args.videos, long_videos=args.long_videos,
                               seconds=args.seconds, size=args.size, seed=args.seed, fps=args.fps,
                               val_fraction=args.val_fraction, long_segments=args.long_segments,
                               segment_seconds=args.segment_seconds, long_size=args.long_size,
                               long_fps=args.long_fps, textured=args.textured)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.videos} videos + {args.long_videos} long videos ({len(CLASSES)} classes: "
          f"{', '.join(CLASSES)}) in {time.time() - t0:.1f}s; manifest: {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
