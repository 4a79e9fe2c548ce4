"""Training-dataset iteration when a node is lost, on a simulated cluster (`ray.cluster_utils.Cluster`:
a head with 0 CPUs and three 1-CPU worker nodes).

    python -m bench.node_loss [--videos 48] [--epochs 2] [--health-check-ms 3000] [--failures 5]

Iterates `build_clip_dataset(..., mode="train", epochs=E)` of small synthetic videos twice in the
same run: once clean (the peer), once with a worker node removed (no graceful shutdown, as a
lost VM) after a quarter of the clips. Prints both times, their ratio, the longest wait for one
batch (the stall) and the clip rate before and after the loss, with the machine load. The
health-check flags are Ray's node-death detection (`health_check_period_ms` x
`health_check_failure_threshold`; Ray's defaults 3000 x 5), to see what the stall is made of.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def iterate(ds, remove=None, at: int = 0) -> dict[str, float]:
    """Clips read, seconds, the longest wait for one batch, and rates before/after `remove()` (called
    once `at` clips were read)."""
    t0 = last = time.perf_counter()
    clips, stall, t_removed, clips_at_removal = 0, 0.0, None, 0
    for batch in ds.iter_batches(batch_size=4, batch_format="numpy"):
        now = time.perf_counter()
        stall, last = max(stall, now - last), now
        clips += len(batch["label"])
        if remove and t_removed is None and clips >= at:
            remove()
            t_removed, clips_at_removal = time.perf_counter(), clips
            last = t_removed
    total = time.perf_counter() - t0
    out = {"clips": clips, "seconds": total, "stall": stall}
    if t_removed is not None:
        out["rate_before"] = clips_at_removal / (t_removed - t0)
        out["rate_after"] = (clips - clips_at_removal) / max(1e-9, time.perf_counter() - t_removed)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--health-check-ms", type=int, default=3000, help="Ray's health_check_period_ms")
    p.add_argument("--failures", type=int, default=5, help="Ray's health_check_failure_threshold")
    args = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.data.dataset import build_clip_dataset
    from pipeline.data.manifest import load_manifest
    from pipeline.data.rows import DecodeConfig
    from pipeline.data.synthetic import make_corpus

    root = tempfile.mkdtemp(prefix="bench-node-loss-")
    rows = load_manifest(make_corpus(root, videos=args.videos, seconds=2.0, size=(64, 48), seed=0,
                                     val_fraction=0.0)).rows
    cfg = DecodeConfig(num_frames=8, sampling_rate=4, crop_size=32, train_short_side=(32, 40), short_side=32,
                     num_cpus=1.0, memory=0, batch_size=2)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 150 * 2**20,
        "_system_config": {"health_check_period_ms": args.health_check_ms,
                           "health_check_failure_threshold": args.failures}})
    nodes = [cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    total = len(rows) * args.epochs
    print(f"load {os.getloadavg()[0]:.1f}; {len(rows)} videos x {args.epochs} epochs; node death noticed after "
          f"{args.failures} x {args.health_check_ms} ms missed health checks", flush=True)
    iterate(build_clip_dataset(rows[:4], cfg, mode="train", seed=0))  # warm-up: workers, imports
    clean = iterate(build_clip_dataset(rows, cfg, mode="train", seed=0, epochs=args.epochs))
    print(f"clean: {clean['clips']} clips in {clean['seconds']:.1f} s (longest wait {clean['stall']:.1f} s); "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    lost = iterate(build_clip_dataset(rows, cfg, mode="train", seed=1, epochs=args.epochs),
                   remove=lambda: cluster.remove_node(nodes[0], allow_graceful=False), at=total // 4)
    print(f"node lost: {lost['clips']} clips in {lost['seconds']:.1f} s (longest wait {lost['stall']:.1f} s; "
          f"{lost['rate_before']:.1f} clips/s before, {lost['rate_after']:.1f} after); load {os.getloadavg()[0]:.1f}")
    print(f"ratio node lost / clean: {lost['seconds'] / clean['seconds']:.2f}x (2 of 3 CPUs left: 1.5x is the "
          f"floor for the part after the loss)")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
