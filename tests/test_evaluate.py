"""Video-level multi-view evaluation (pure torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.evaluate import VideoScores, evaluate_views, video_accuracy


class MeanColour(nn.Module):
    """Logits = mean of each channel (class i wins when channel i is brightest)."""

    family = "test"

    class config:  # noqa: N801 - stands in for a model's config dataclass
        mean = (0.0, 0.0, 0.0)
        std = (1.0, 1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4)) * 50  # [B, 3]


def _view(channel: int, strength: int) -> np.ndarray:
    clip = np.zeros((2, 4, 4, 3), np.uint8)
    clip[..., channel] = strength
    return clip


def test_scores_of_all_views_are_summed_per_video():
    # video a (label 0): two weak views say 1, one strong view says 0 -> summed softmax picks 0
    # video b (label 2): all views say 2
    views = [("a", 0, _view(1, 2)), ("a", 0, _view(1, 2)), ("a", 0, _view(0, 255)),
             ("b", 2, _view(2, 200)), ("b", 2, _view(2, 90)), ("b", 2, _view(2, 120))]
    batches = [
        {"frames": np.stack([v[2] for v in views[i:i + 4]]), "label": np.array([v[1] for v in views[i:i + 4]]),
         "video_id": np.array([v[0] for v in views[i:i + 4]])}
        for i in range(0, len(views), 4)  # a video's views split across batches
    ]
    out = evaluate_views(MeanColour(), batches)
    assert out["num_videos"] == 2 and out["views_per_video"] == [3, 3]
    assert out["predictions"] == {"a": 0, "b": 2}
    assert out["top1"] == 1.0


def test_majority_of_views_is_not_the_rule():
    """Per-view votes would say 1 for video a; summed probabilities say 0 (the official rule)."""
    acc = VideoScores()
    logits = torch.tensor([[0.0, 0.2], [0.0, 0.2], [5.0, 0.0]])
    acc.add(logits, [0, 0, 0], ["a", "a", "a"])
    assert video_accuracy(acc, topk=(1,))["top1"] == 1.0


def test_top5_and_unlabelled_videos():
    acc = VideoScores()
    logits = torch.zeros(2, 10)
    logits[0, 3] = 1.0  # video x: label 7 ranks in the top 5 after 3 (ties by index)
    logits[0, 7] = 0.5
    acc.add(logits, [7, -1], ["x", "y"])
    out = video_accuracy(acc)
    assert out["num_videos"] == 1  # y has no label
    assert out["top1"] == 0.0 and out["top5"] == 1.0


def test_views_disagreeing_on_the_label_is_an_error():
    acc = VideoScores()
    acc.add(torch.zeros(1, 3), [0], ["v"])
    with pytest.raises(ValueError, match="disagree"):
        acc.add(torch.zeros(1, 3), [1], ["v"])
