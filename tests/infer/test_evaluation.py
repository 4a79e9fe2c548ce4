"""Multi-view evaluation on the inference path (`jobs.train --eval-only`).

- the rule: a video's score is the mean of the softmax of all its views (clips x crops), not a
  vote of views, and top-5 counts a label among the five best;
- on a real local Ray with real videos, the numbers equal the direct computation: every view of
  every video decoded with the one clip path and scored by the model in this process, its softmax
  summed per video (the protocol the evaluation had before it moved onto the inference path).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from infer_cases import CLIP

from pipeline.data import synthetic
from pipeline.data.clips import ClipConfig
from pipeline.infer import read_video
from pipeline.infer.evaluation import accuracy, evaluate_videos
from pipeline.infer.outputs import prediction_row


def _row(vid, view_logits, target, names):
    item = {"video_id": vid, "uri": f"{vid}.mp4", "target": target}
    k = view_logits.shape[0]
    meta = {"duration": 1.0, "fps": 30.0, "starts": list(range(k)), "ends": list(range(1, k + 1)), "num_padded": 0}
    row = prediction_row(item, meta, np.asarray(view_logits, np.float32), names, "mean_probs", 5)
    row["views"] = view_logits.shape[1]
    return row


def test_the_mean_of_the_views_softmax_decides_not_a_vote_of_views():
    names = ["a", "b"]
    # two weak views say b, one strong view says a: the summed softmax says a
    logits = np.array([[[0.0, 0.2], [0.0, 0.2], [5.0, 0.0]]])  # [K=1, V=3, C]
    out = accuracy([_row("v", logits, "a", names)], topk=(1,))
    assert out["top1"] == 1.0 and out["predictions"] == {"v": 0} and out["views_per_video"] == [3, 3]


def test_top5_unlabelled_and_failed_videos():
    names = [str(i) for i in range(10)]
    x = np.zeros((1, 1, 10))
    x[0, 0, 3], x[0, 0, 7] = 1.0, 0.5  # label 7 ranks in the top 5 after 3
    failed = {"video_id": "z", "status": "error", "target": "1", "top_labels": [], "num_clips": 0, "label_id": None}
    out = accuracy([_row("x", x, "7", names), _row("y", np.zeros((1, 1, 10)), None, names), failed])
    assert out["num_videos"] == 2 and out["failed_videos"] == 1  # y has no label; z failed
    assert out["top1"] == 0.0 and out["top5"] == pytest.approx(1 / 2)  # z counts as wrong


def test_the_inference_path_gives_the_direct_multi_view_numbers(ray_local, trained_ckpt, short_videos, tmp_path):
    from pipeline.model import load

    labels = {f"v{i}": synthetic.CLASSES[i % 4] for i in range(len(short_videos))}  # what each video shows
    man = tmp_path / "val.csv"
    man.write_text("path,video_id,label\n" + "".join(f"{p},v{i},{labels[f'v{i}']}\n"
                                                      for i, p in enumerate(short_videos)))
    values = {**CLIP, "sampling": "uniform", "clips": 2, "crops": 3, "short_side": 40}
    got = evaluate_videos(trained_ckpt, str(man), str(tmp_path / "eval"), values, batch_size=4, device="cpu")

    model = load(trained_ckpt).eval()
    spec = ClipConfig(**values)
    scores = {}
    for i, p in enumerate(short_videos):
        _, clips = read_video({"uri": p}, spec)  # [K, V, T, S, S, 3]
        views = torch.from_numpy(clips.reshape(-1, *clips.shape[2:]))
        from pipeline.model.forward import clip_logits

        with torch.inference_mode():
            scores[f"v{i}"] = clip_logits(model, views).float().softmax(-1).sum(0)  # summed view scores
    direct = {v: int(s.argmax()) for v, s in scores.items()}
    assert got["predictions"] == direct
    top1 = np.mean([synthetic.CLASSES[direct[v]] == labels[v] for v in direct])
    assert got["top1"] == pytest.approx(top1) and got["num_videos"] == len(short_videos)
    assert got["views_per_video"] == [6, 6]
