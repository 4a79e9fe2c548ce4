"""Video-level multi-view evaluation on the inference path (`jobs.train --eval-only`).

    result = evaluate_videos(checkpoint, manifest_uri, output, clip_values, batch_size=8, device="auto")

Every video of the manifest is covered by the clip protocol `clip_values` gives (e.g. uniform K
clips x 3 crops) and classified exactly as `jobs.infer` does: the same decode tasks, the same
model actor pool (on GPU nodes when the cluster has or can add them), one row per video, with the
video score the mean of the softmax over every view (clip x crop). The numbers (`top1`, `top5`
against the manifest's labels) come from those rows; the rows themselves are in `output`.
"""

from __future__ import annotations

from typing import Any

from pipeline import storage
from pipeline.infer.config import ClipOverrides, InferConfig, plan_inference
from pipeline.model.recipe import CLIP_FIELDS


def accuracy(rows: list[dict[str, Any]], topk: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    """`top1`, `top5` (of the videos with a label; a failed video counts as wrong), the number of
    videos scored, views per video [min, max], and each video's predicted class id (pure)."""
    labelled = [r for r in rows if r["target"] is not None]
    out: dict[str, Any] = {}
    for k in topk:
        hits = sum(r["status"] == "ok" and r["target"] in r["top_labels"][:k] for r in labelled)
        out[f"top{k}"] = hits / len(labelled) if labelled else None
    ok = [r for r in rows if r["status"] == "ok"]
    views = [r["num_clips"] * r["views"] for r in ok]
    out.update({"num_videos": len(ok), "failed_videos": len(rows) - len(ok),
                "views_per_video": [min(views), max(views)] if views else [0, 0],
                "predictions": {r["video_id"]: r["label_id"] for r in ok}})
    return out


def evaluate_videos(checkpoint: str, manifest: str, output: str, clip_values: dict[str, Any], *,
                    batch_size: int = 8, device: str = "auto", labels: str | None = None,
                    howto100m_template: str | None = None) -> dict[str, Any]:
    """Classify every video of `manifest` under `output` (its earlier rows are replaced) and score
    the predictions against the manifest's labels (see `accuracy`)."""
    from pipeline.guard import claim_output
    from pipeline.infer.driver import run_inference
    from pipeline.infer.outputs import MARKER, OWNED

    cfg = InferConfig(clip=ClipOverrides(**{k: clip_values[k] for k in CLIP_FIELDS}), aggregate="mean_probs",
                      top_k=5, batch_size=batch_size, labels=labels, allow_resample=True)
    plan = plan_inference(checkpoint, cfg)  # the clip values were resolved (and warned about) already
    claim_output(output, MARKER, {"checkpoint": checkpoint, "videos": manifest}, overwrite=True, owned=OWNED,
                 job="jobs.train --eval-only")
    result = run_inference(checkpoint, manifest, output, cfg, device=device, plan=plan,
                           howto100m_template=howto100m_template)
    rows = storage.read_parquet(result.predictions).to_pylist()
    for r in rows:
        r["views"] = int(clip_values["crops"])
    out = accuracy(rows)
    out.update({"predictions_uri": result.predictions, "seconds": result.wall_s, "clips": result.clips})
    return out
