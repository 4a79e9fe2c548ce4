"""Video-level multi-view evaluation (pure torch, no ray).

The official test protocol: every video is seen as K temporal clips x 3 spatial crops ("views");
the softmax scores of its views are summed and the video is classified by the sum.

    result = evaluate_views(model, batches, device="cuda")
    result["top1"], result["top5"], result["num_videos"]

`batches` is any iterable of mappings with `frames` (uint8 [B, T, H, W, 3], numpy or torch),
`label` ([B] ints) and `video_id` ([B] strings): e.g. `ds.iter_batches(batch_format="numpy")`
over a `build_clip_dataset(..., mode="test")` dataset with `clips=K, crops=3`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from pipeline.model.forward import clip_logits


@dataclass
class VideoScores:
    """Summed view scores per video, with the video's label and its number of views."""

    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # video_id -> float [C]
    labels: dict[str, int] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)

    def add(self, logits: torch.Tensor, labels: Iterable[int], video_ids: Iterable[str], *,
            softmax: bool = True) -> None:
        """Add a batch of view logits [B, C]; scores are softmax probabilities unless `softmax=False`."""
        probs = (logits.float().softmax(-1) if softmax else logits.float()).cpu()
        for row, label, vid in zip(probs, labels, video_ids):
            vid, label = str(vid), int(label)
            if vid in self.scores:
                if self.labels[vid] != label:
                    raise ValueError(f"video {vid!r}: views disagree on the label ({self.labels[vid]} vs {label})")
                self.scores[vid] += row
                self.views[vid] += 1
            else:
                self.scores[vid], self.labels[vid], self.views[vid] = row.clone(), label, 1


def video_accuracy(acc: VideoScores, topk: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    """Top-k accuracy of the summed scores over videos with a known label (label >= 0)."""
    ids = [v for v in acc.scores if acc.labels[v] >= 0]
    out: dict[str, Any] = {"num_videos": len(ids)}
    if ids:
        scores = torch.stack([acc.scores[v] for v in ids])  # [V, C]
        labels = torch.tensor([acc.labels[v] for v in ids])  # [V]
        for k in topk:
            kk = min(k, scores.shape[1])
            hit = (scores.topk(kk, dim=1).indices == labels[:, None]).any(dim=1)
            out[f"top{k}"] = float(hit.float().mean())
        views = [acc.views[v] for v in ids]
        out["views_per_video"] = [min(views), max(views)]
    else:
        out.update({f"top{k}": float("nan") for k in topk})
    return out


@torch.no_grad()
def evaluate_views(model: nn.Module, batches: Iterable[Mapping[str, Any]], *, device: str | torch.device = "cpu",
                   softmax: bool = True, topk: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    """Run `model` over every view in `batches` and score videos by their summed view scores.

    Returns `{"top1", "top5", "num_videos", "views_per_video": [min, max], "predictions":
    {video_id: class id}}`. bf16 autocast on CUDA.
    """
    model = model.to(torch.device(device)).eval()
    acc = VideoScores()
    for batch in batches:
        frames = batch["frames"]
        if not torch.is_tensor(frames):  # Arrow-backed arrays are read-only: copy once
            frames = torch.from_numpy(np.array(frames))
        logits = clip_logits(model, frames)  # uint8 [B, T, H, W, 3] -> [B, C] on the model's device
        acc.add(logits, [int(v) for v in batch["label"]], [str(v) for v in batch["video_id"]], softmax=softmax)
    out = video_accuracy(acc, topk)
    out["predictions"] = {v: int(s.argmax()) for v, s in acc.scores.items()}
    return out
