"""The pure rules of inference on Ray Data: how big the model pool may grow, and how scored clips
become one row per video (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.infer import InferConfig
from pipeline.infer.collect import Collector
from pipeline.infer.pool import gpus_in_autoscaler_config, plan_pool


def test_gpu_nodes_from_zero_give_gpu_actors_up_to_the_node_types_gpus():
    pool = plan_pool(InferConfig(), "auto", gpus_now=0, gpus_max=16)  # none yet, 16 the types allow
    assert (pool.num_gpus, pool.min_actors, pool.max_actors, pool.device) == (1.0, 1, 16, "cuda")
    assert plan_pool(InferConfig(), "auto", gpus_now=2, gpus_max=0).max_actors == 2  # no config: what is there
    assert plan_pool(InferConfig(actors=4), "auto", 0, 16).max_actors == 4  # --actors caps it
    half = plan_pool(InferConfig(actor_gpus=0.5), "auto", 0, 3)  # fractional sharing
    assert (half.num_gpus, half.max_actors) == (0.5, 6)


def test_no_gpu_anywhere_or_device_cpu_gives_one_cpu_actor_and_fake_gpus_compute_on_cpu():
    for pool in (plan_pool(InferConfig(), "auto", 0, 0), plan_pool(InferConfig(), "cpu", 0, 8)):
        assert (pool.num_gpus, pool.max_actors, pool.device) == (0.0, 1, "cpu")
    fake = plan_pool(InferConfig(actor_gpus=1), "cpu", 0, 2)  # GPU slots, CPU compute (tests)
    assert (fake.num_gpus, fake.max_actors, fake.device) == (1.0, 2, "cpu")
    assert plan_pool(InferConfig(min_actors=3), "auto", 0, 2).min_actors == 2  # never above the cap


def test_the_autoscaler_config_counts_gpus_per_node_type_times_max_workers():
    config = {"head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "cpu": {"resources": {"CPU": 32}, "max_workers": 20},
        "p4d": {"resources": {"CPU": 96, "GPU": 8}, "max_workers": 4},
        "g5": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 2}}}
    assert gpus_in_autoscaler_config(config) == 34


def _batch(vid, clips, k, views=1, classes=3, error=""):
    n = len(clips)
    logits = np.zeros((n, views, classes), np.float32)
    for j, c in enumerate(clips):
        logits[j, :, c % classes] = 5.0
    return {"video_id": np.array([vid] * n, object), "clip_index": np.array(clips), "num_clips": np.full(n, k),
            "logits": logits, "start_sec": np.array(clips, float), "end_sec": np.array(clips, float) + 1,
            "num_padded": np.zeros(n, int), "duration": np.full(n, float(k)), "fps": np.full(n, 30.0),
            "truncated": np.zeros(n, bool), "error": np.array([error] * n, object),
            "stage": np.array(["open" if error else ""] * n, object)}


def test_a_video_row_comes_when_its_clips_are_all_in_whatever_the_order_and_repeats():
    items = {"a": {"video_id": "a", "uri": "a.mp4", "target": "x"}, "b": {"video_id": "b", "uri": "b.mp4"}}
    c = Collector(items, ["x", "y", "z"], aggregate="mean_logits", top_k=2)
    assert list(c.add(_batch("a", [2, 0], 3))) == []
    assert list(c.add(_batch("a", [0], 3))) == []  # a retried task's clip again: counted once
    rows = list(c.add({k: np.concatenate([_batch("b", [0], 1)[k], _batch("a", [1], 3)[k]])
                       for k in _batch("a", [1], 3)}))  # one batch across videos
    assert [r["video_id"] for r in rows] == ["b", "a"] and c.clips == 4
    a = rows[1]
    assert a["num_clips"] == 3 and [t["start_sec"] for t in a["timeline"]] == [0.0, 1.0, 2.0]
    assert a["status"] == "ok" and a["target"] == "x" and a["top_labels"][0] in ("x", "y", "z")
    assert list(c.finish()) == []


def test_a_decode_error_is_the_videos_row_and_lost_clips_end_as_retryable_rows():
    items = {v: {"video_id": v, "uri": f"{v}.mp4"} for v in ("bad", "half", "none")}
    c = Collector(items, ["x", "y"], aggregate="mean_probs", top_k=1)
    (row,) = c.add(_batch("bad", [0], 0, error="file not found"))
    assert (row["status"], row["stage"], row["error"]) == ("error", "open", "file not found")
    assert list(c.add(_batch("half", [0], 2))) == []
    left = {r["video_id"]: r for r in c.finish()}
    assert sorted(left) == ["half", "none"] and all(r["stage"] == "worker" for r in left.values())
    assert "1 of 2 clips" in left["half"]["error"] and "no clips" in left["none"]["error"]


def test_views_are_aggregated_as_the_multi_view_protocol_and_the_timeline_averages_them():
    items = {"a": {"video_id": "a", "uri": "a.mp4"}}
    c = Collector(items, ["x", "y"], aggregate="mean_probs", top_k=2)
    b = _batch("a", [0, 1], 2, views=3, classes=2)
    b["logits"][0] = [[4.0, 0.0], [0.0, 4.0], [0.0, 4.0]]  # clip 0: one view says x, two say y
    b["logits"][1] = [[4.0, 0.0], [4.0, 0.0], [4.0, 0.0]]
    (row,) = c.add(b)
    views = b["logits"].reshape(-1, 2)
    probs = np.exp(views) / np.exp(views).sum(1, keepdims=True)
    assert row["top_scores"][0] == pytest.approx(probs.mean(0).max(), rel=1e-5)  # mean of 6 views' softmax
    mean0 = b["logits"][0].mean(0)
    assert row["timeline"][0]["scores"] == pytest.approx(list(np.exp(mean0) / np.exp(mean0).sum()), rel=1e-5)


def test_small_seek_passes_join_into_one_block_and_large_ones_stay_alone():
    from pipeline.infer.decode import merged

    def passes(n, k, side):
        return [{"frames": np.zeros((k, 1, 2, side, side, 3), np.uint8), "clip_index": np.arange(i * k, (i + 1) * k)}
                for i in range(n)]

    small = list(merged(iter(passes(3, 2, 4)), max_bytes=10_000))  # 3 x 192 B
    assert len(small) == 1 and small[0]["clip_index"].tolist() == [0, 1, 2, 3, 4, 5]
    big = list(merged(iter(passes(3, 2, 40)), max_bytes=20_000))  # 19.2 KB each
    assert [b["clip_index"].tolist() for b in big] == [[0, 1], [2, 3], [4, 5]]
