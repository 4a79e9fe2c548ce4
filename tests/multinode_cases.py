"""The drivers of the node-loss tests (`tests/test_multinode.py`), one per job, run as a subprocess:

    RAY_ADDRESS=<cluster> python tests/multinode_cases.py {preprocess,infer,train,train_elastic} <workdir>

Each connects to the test's `ray.cluster_utils.Cluster`, starts its job on small synthetic videos
and, once the job is visibly under way, asks the test to remove one worker node: it writes that
node's id to `<workdir>/remove_node` and waits for `<workdir>/node_removed` (the test owns the
Cluster, so it removes the node; `train_elastic` also asks for a node back through
`<workdir>/add_node`, answered by `<workdir>/node_added`). When the job returns, what it delivered goes to
`<workdir>/result.json` for the test to check. Kept out of pytest's collection (no `test_` name).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable

import ray

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _worker_nodes() -> list[str]:
    """Ids of the alive nodes that have CPUs (the head has none)."""
    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]


def _actor_nodes(class_name: str) -> list[str]:
    """Nodes of the alive actors whose class name ends with `class_name` (read from the GCS)."""
    from ray._private.state import actors

    return [a["Address"]["NodeID"] for a in actors().values()
            if a["State"] == "ALIVE" and a["ActorClassName"].endswith(class_name)]


def _remove_when(work: str, ready: Callable[[], str | None], timeout: float = 240) -> threading.Thread:
    """Watch in a thread: once `ready()` returns a node id, ask the test to remove that node."""
    def watch() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            node = ready()
            if node:
                with open(os.path.join(work, "remove_node.tmp"), "w") as f:
                    f.write(node)
                os.replace(os.path.join(work, "remove_node.tmp"), os.path.join(work, "remove_node"))
                while not os.path.exists(os.path.join(work, "node_removed")) and time.time() < deadline:
                    time.sleep(0.1)
                print(f"[multinode] node {node[:8]} removed at {time.time():.1f}", flush=True)
                return
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def preprocess(work: str) -> dict[str, Any]:
    """jobs.preprocess over 12 videos in 6 shards; a node goes once the first shard is done."""
    import pyarrow.parquet as pq

    from jobs.preprocess import main
    from pipeline.data.synthetic import make_corpus

    corpus, out = os.path.join(work, "corpus"), os.path.join(work, "out")
    make_corpus(corpus, videos=16, seconds=2.0, size=(64, 48), seed=0, val_fraction=0.0)
    watcher = _remove_when(work, lambda: _worker_nodes()[0]
                           if glob.glob(os.path.join(out, "_progress", "shard-*.json")) else None)
    rc = main(["--manifest", os.path.join(corpus, "train.csv"), "--output", out, "--num-frames", "4",
               "--sampling-rate", "4", "--clips", "2", "--short-side", "32", "--rows-per-shard", "2",
               "--memory-mb", "64"])
    watcher.join(timeout=1)
    summary = json.load(open(os.path.join(out, "summary.json")))
    keys = Counter()
    for f in glob.glob(os.path.join(out, "clips", "*.parquet")):
        t = pq.read_table(f, columns=["video_id", "clip_index", "crop_index"]).to_pylist()
        keys.update((r["video_id"], r["clip_index"], r["crop_index"]) for r in t)
    manifest_ids = [line.split(",")[2] for line in open(os.path.join(corpus, "train.csv")).read().split()[1:]]
    return {"rc": rc, "summary": {k: summary[k] for k in ("videos", "videos_ok", "videos_failed", "clips",
                                                          "shards", "files")},
            "clip_rows": sum(keys.values()), "duplicates": sum(n > 1 for n in keys.values()),
            "videos_with_clips": sorted({k[0] for k in keys}), "manifest_ids": sorted(manifest_ids),
            "files_on_disk": sorted(os.path.relpath(f, out) for f in glob.glob(os.path.join(out, "clips", "*")))}


def infer(work: str) -> dict[str, Any]:
    """Inference over 12 videos on Ray Data; the model actor's node goes once the first part file
    is written (Ray Data restarts the actor elsewhere and runs its lost batches again). Then a
    clean run of the same videos, to compare."""
    import pyarrow.parquet as pq
    import torch

    from pipeline.data import synthetic
    from pipeline.data.manifest import LabelMap, write_labels
    from pipeline.infer import ClipOverrides, InferConfig, run_inference
    from pipeline.model import create, save

    torch.manual_seed(0)
    ckpt = os.path.join(work, "model", "model.pt")
    os.makedirs(os.path.dirname(ckpt))
    save(create("debug", num_classes=4), ckpt)
    write_labels(os.path.join(work, "model", "labels.json"), LabelMap(tuple(synthetic.CLASSES)))
    items = []
    for i in range(12):
        path = os.path.join(work, f"clip{i}.mp4")
        synthetic.write_motion_video(path, i % 4, seconds=3, fps=15, size=(96, 72), seed=i)
        items.append({"video_id": f"v{i:02d}", "uri": path})
    # each model call lasts >= 0.3 s, so that work is left when the first part is written
    # (a 24-call run, otherwise done in a few seconds, could end before the node goes)
    clean_cfg = InferConfig(clip=ClipOverrides(sampling_rate=8, short_side=32, crop_size=32, sampling="uniform",
                                               clips=4), batch_size=2, part_size=2, actor_restarts=4)
    cfg = dataclasses.replace(clean_cfg, min_model_call_s=0.3)
    out = os.path.join(work, "out")
    scorer = "ClipScorer))"  # Ray Data's actor class: MapWorker(MapBatches(ClipScorer))
    seen: list[str] = []  # nodes a model actor was alive on, in order

    def model_node() -> str | None:
        for node in _actor_nodes(scorer):
            if node not in seen:
                seen.append(node)
        return seen[0] if seen and glob.glob(os.path.join(out, "parts", "*.parquet")) else None

    watcher = _remove_when(work, model_node)
    stop = threading.Event()
    def spot() -> None:  # keep noting the nodes of the model actors (the restarted one too)
        while not stop.wait(0.2):
            model_node()

    spotter = threading.Thread(target=spot, daemon=True)
    spotter.start()
    result = run_inference(ckpt, items, out, cfg, device="cpu")
    stop.set()
    watcher.join(timeout=1)
    rows = pq.read_table(os.path.join(out, "predictions.parquet")).to_pylist()
    clean = os.path.join(work, "clean")  # the same videos again, nothing lost: the same predictions
    run_inference(ckpt, items, clean, clean_cfg, device="cpu")
    clean_rows = {r["video_id"]: r for r in pq.read_table(os.path.join(clean, "predictions.parquet")).to_pylist()}
    return {"model_node": seen[0] if seen else None, "model_nodes_after": seen[1:],
            "same_as_clean": all(r["top_ids"] == clean_rows[r["video_id"]]["top_ids"] and abs(
                r["score"] - clean_rows[r["video_id"]]["score"]) < 1e-4 for r in rows if r["status"] == "ok"),
            "ids": [r["video_id"] for r in rows], "status": Counter(r["status"] for r in rows),
            "errors": [r.get("error") for r in rows if r["status"] != "ok"],
            "clips": result.clips, "processed": result.processed,
            "expected_ids": [it["video_id"] for it in items]}


def train(work: str) -> dict[str, Any]:
    """configs/debug.yaml, shrunk to 9 steps of 2 workers; the node of a training worker goes once
    checkpoint 4 is stored (FailureConfig restarts the group on the remaining nodes)."""
    from pipeline.config import load_config
    from pipeline.data.synthetic import make_corpus
    from pipeline.train import TrainJobConfig, fit, read_metrics, run_dir_of

    corpus = os.path.join(work, "corpus")
    make_corpus(corpus, videos=32, seconds=2.0, size=(64, 48), seed=5)
    cfg = load_config(TrainJobConfig, os.path.join(ROOT, "configs", "debug.yaml"), [
        f"train_manifest={corpus}/train.csv", f"val_manifest={corpus}/val.csv",
        f"run.storage_path={work}/runs", "run.name=nodeloss", "run.max_failures=2",
        "loop.epochs=3", "loop.batch_size=4", "loop.eval_every_epochs=3", "loop.checkpoint_every_steps=2",
        "loop.log_every_steps=1", "loop.cache_val=false",
    ])
    run_dir = run_dir_of(cfg.run)
    watcher = _remove_when(work, lambda: (_actor_nodes("RayTrainWorker") or [None])[0]
                           if os.path.exists(os.path.join(run_dir, "checkpoint_00000004", "state.pt")) else None)
    fit(cfg)
    watcher.join(timeout=1)
    records = read_metrics(run_dir)
    return {"starts": [r["resumed_from"] for r in records if r["kind"] == "start"],
            "train_steps": [r["step"] for r in records if r["kind"] == "train"],
            "end": [r["step"] for r in records if r["kind"] == "end"],
            "model": os.path.exists(os.path.join(run_dir, "model.pt"))}


def _request(work: str, name: str, payload: str, timeout: float = 120) -> None:
    """Ask the test for `name` (remove_node / add_node) and wait until it says it is done."""
    with open(os.path.join(work, f"{name}.tmp"), "w") as f:
        f.write(payload)
    os.replace(os.path.join(work, f"{name}.tmp"), os.path.join(work, name))
    done = os.path.join(work, {"remove_node": "node_removed", "add_node": "node_added"}[name])
    deadline = time.time() + timeout
    while not os.path.exists(done) and time.time() < deadline:
        time.sleep(0.1)
    print(f"[multinode] {name} {payload[:8]} done at {time.time():.1f}", flush=True)


def train_elastic(work: str) -> dict[str, Any]:
    """configs/debug.yaml with [1, 2] elastic workers, each needing one `trainer` slot (the test
    starts two nodes with one slot each, a stand-in for two GPU nodes). Once Ray Train has
    registered a checkpoint of the group of two, a worker's node goes: the group goes on with one
    worker; once that worker has logged a step, a slot node comes back: the group grows to two
    again and ends at the last step."""
    from pipeline.config import load_config
    from pipeline.data.synthetic import make_corpus
    from pipeline.train import TrainJobConfig, fit, read_metrics, run_dir_of
    from pipeline.train.audit import consumed_clips
    from pipeline.train.checkpoint import step_of

    corpus = os.path.join(work, "corpus")
    make_corpus(corpus, videos=32, seconds=2.0, size=(64, 48), seed=5)
    cfg = load_config(TrainJobConfig, os.path.join(ROOT, "configs", "debug.yaml"), [
        f"train_manifest={corpus}/train.csv", f"val_manifest={corpus}/val.csv",
        f"run.storage_path={work}/runs", "run.name=elastic", "run.max_failures=3",
        "scale.num_workers=[1,2]", "scale.resources_per_worker.trainer=1", "scale.resize_interval_s=5",
        "optim.effective_batch=8", "loop.epochs=5", "loop.batch_size=4", "loop.eval_every_epochs=5",
        "loop.checkpoint_every_steps=1", "loop.log_every_steps=1", "loop.cache_val=false", "loop.record_clips=true",
    ])
    run_dir = run_dir_of(cfg.run)

    def registered_step() -> int:
        """The step of the latest checkpoint Ray Train has registered (a restart resumes from it;
        a folder written but not yet collected from the workers is not one), -1 when none."""
        try:
            with open(os.path.join(run_dir, "checkpoint_manager_snapshot.json")) as f:
                latest = json.load(f).get("latest_checkpoint_result") or {}
        except (OSError, ValueError):  # not written yet, or being rewritten
            return -1
        step = step_of(latest.get("checkpoint_dir_name", ""))
        return -1 if step is None else step

    def running_at(world: int) -> bool:
        """The latest group has `world` workers and has trained a step (and, at 2, has a registered
        checkpoint of its own, so that losing a node resumes from it rather than from the start)."""
        records = read_metrics(run_dir) if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) else []
        starts = [r for r in records if r["kind"] == "start"]
        if not starts or starts[-1]["world_size"] != world:
            return False
        since = starts[-1]["step"]
        return any(r["kind"] == "train" and r["step"] > since for r in records) and (
            world == 1 or registered_step() > since)

    def watch() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not running_at(2):
            time.sleep(0.2)
        _request(work, "remove_node", (_actor_nodes("RayTrainWorker") or [""])[0])
        while time.time() < deadline and not running_at(1):
            time.sleep(0.2)
        _request(work, "add_node", "trainer")

    # Ray Train sizes an elastic group from the resources it sees at start: both slot nodes first
    deadline = time.time() + 60
    while ray.available_resources().get("trainer", 0) < 2 and time.time() < deadline:
        time.sleep(0.2)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    fit(cfg)
    watcher.join(timeout=1)
    records = read_metrics(run_dir)
    epochs: dict[int, Counter] = {}
    for rows in consumed_clips(run_dir).values():
        for epoch, vid, clip in rows:
            epochs.setdefault(epoch, Counter())[f"{vid}/{clip}"] += 1
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    return {"starts": [[r["resumed_from"], r["world_size"]] for r in records if r["kind"] == "start"],
            "train_steps": [r["step"] for r in records if r["kind"] == "train"],
            "end": [r["step"] for r in records if r["kind"] == "end"], "total_steps": summary["plan"]["total_steps"],
            "epoch_clips": {e: dict(c) for e, c in epochs.items()}, "train_clips": summary["plan"]["num_train_clips"],
            "clips_consumed": summary["clips_consumed"], "clips_decoded": summary["clips_decoded"]}


if __name__ == "__main__":
    name, workdir = sys.argv[1], sys.argv[2]
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, configure_logging=False)
    t0 = time.time()
    out = {"preprocess": preprocess, "infer": infer, "train": train, "train_elastic": train_elastic}[name](workdir)
    out["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(out, f, default=str)
    print(f"[multinode] {name} done in {out['seconds']} s", flush=True)
