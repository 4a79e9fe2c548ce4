"""Driver cost of planning a training dataset: ours (O(rows)) vs one item per row per epoch.

    python -m bench.dataset [--rows 1200000] [--epochs 15]

Builds `build_clip_dataset(rows, mode="train", epochs=E)` on a local Ray (no decoding: the
dataset is only planned, as `fit` does before training starts) and, as the peer, the list of
rows x epochs items, one per row per epoch, handed to `ray.data.from_items`. Prints wall time and the
driver's peak RSS growth of each, and their ratios. Rows are HowTo100M-like (s3 paths, task ids).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rows(n: int) -> list[dict]:
    return [{"path": f"s3://bucket/howto100m/{i:011d}.mp4", "label": i % 1059, "video_id": f"{i:011d}",
             "start_sec": None, "end_sec": None} for i in range(n)]


def peer(rows: list[dict], epochs: int) -> list[dict]:
    """One item per row per epoch, each epoch reshuffled (what the builder did before)."""
    import numpy as np

    items = []
    for e in range(epochs):
        order = np.random.default_rng([0, e, 0x5EED]).permutation(len(rows))
        items.extend({**rows[i], "epoch": e} for i in order)
    return items


def measure(fn) -> tuple[float, float]:
    gc.collect()
    before, t0 = _rss_mb(), time.perf_counter()
    out = fn()
    seconds, grown = time.perf_counter() - t0, _rss_mb() - before
    del out
    gc.collect()
    return seconds, grown


def compare(rows: list[dict], epochs: int, *, with_peer: bool = True) -> dict[str, float]:
    """Build the dataset (and, with `with_peer`, the peer's item list) on the running Ray; prints
    and returns the seconds and driver RSS growth (MB) of each (`bench.scale` reuses it)."""
    from pipeline.data.dataset import build_clip_dataset
    from pipeline.data.rows import DecodeConfig

    build_clip_dataset(_rows(100), DecodeConfig(), mode="train", seed=0, epochs=2)  # warm-up: imports, first put
    print(f"load {os.getloadavg()[0]:.2f}; {len(rows)} rows x {epochs} epochs")
    ours_s, ours_mb = measure(lambda: build_clip_dataset(rows, DecodeConfig(), mode="train", seed=0, epochs=epochs))
    print(f"ours: {ours_s:.2f} s, +{ours_mb:.0f} MB driver RSS")
    out = {"ours_s": ours_s, "ours_mb": ours_mb}
    if with_peer:
        peer_s, peer_mb = measure(lambda: peer(rows, epochs))
        print(f"peer (rows x epochs items, before from_items): {peer_s:.2f} s, +{peer_mb:.0f} MB")
        print(f"time ratio peer/ours {peer_s / max(ours_s, 1e-9):.1f}x; memory ratio {peer_mb / max(ours_mb, 1):.1f}x")
        out.update(peer_s=peer_s, peer_mb=peer_mb)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_200_000)
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    compare(_rows(args.rows), args.epochs)
    ray.shutdown()


if __name__ == "__main__":
    main()
