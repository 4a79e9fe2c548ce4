"""The explain run on Ray: inference's decode tasks -> one model actor -> maps, features, t-SNE."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from pipeline.data.clips import ClipConfig
from pipeline.data.errors import MODEL, WORKER, error_row, error_text
from pipeline.explain.outputs import embed_and_score, failed_row, feature_row, map_uri, write_features, write_map
from pipeline.infer.actor import load_model
from pipeline.infer.tasks import decode_video_task


@ray.remote
class Explainer:
    """Holds one model (loaded once); turns a video's clips into its clip features and maps."""

    def __init__(self, checkpoint: str, device: str = "cpu", threads: int = 1, batch_size: int = 8):
        self.model, self.device = load_model(checkpoint, device, threads)
        self.batch_size = batch_size

    def explain(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 clips [K, V, T, S, S, 3] -> (features [K, D], maps [K, T', h, w]), float32, from
        the centre view (V // 2: the centre of three crops)."""
        import torch

        from pipeline.model.forward import model_input
        from pipeline.model.rollout import explain

        view = clips[:, clips.shape[1] // 2]  # [K, T, S, S, 3]
        feats, maps = [], []
        with torch.inference_mode():
            for i in range(0, len(view), self.batch_size):
                f, m = explain(self.model, model_input(self.model, torch.from_numpy(np.array(view[i:i + self.batch_size]))))
                feats.append(f.float().cpu().numpy())
                maps.append(m.cpu().numpy())
        return np.concatenate(feats), np.concatenate(maps)


@ray.remote(num_cpus=0.25)
def map_plot_task(clips: np.ndarray, maps: np.ndarray, uri: str, title: str) -> None:
    """The PNG of a video's clips (centre view) with their maps (keeps matplotlib off the driver)."""
    from pipeline.plots import plot_rollout

    plot_rollout(clips[:, clips.shape[1] // 2], maps, uri, title)


@dataclass
class ExplainResult:
    total: int = 0
    ok: int = 0
    errors: int = 0
    clips: int = 0
    silhouette: float | None = None
    wall_s: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


def run_explain(checkpoint: str, items: list[dict[str, Any]], bad_rows: list[dict[str, Any]], output: str,
                spec: ClipConfig, *, device: str = "cpu", actor_cpus: float = 1.0, actor_gpus: float = 0.0,
                decode_num_cpus: float = 1.0, max_videos_in_flight: int = 8, batch_size: int = 8,
                perplexity: float = 30.0, seed: int = 0) -> ExplainResult:
    """Explain every item (`{video_id, uri, target}`); `bad_rows` (`{video_id, uri, stage, error}`)
    become error rows. Writes everything `pipeline.explain.outputs` lists; returns the counts."""
    t0 = time.perf_counter()
    actor = Explainer.options(num_cpus=actor_cpus, num_gpus=actor_gpus).remote(
        checkpoint, device, max(1, int(actor_cpus)), batch_size)
    rows = [failed_row(r["video_id"], error_row(r["uri"], r["stage"], r["error"])) for r in bad_rows]
    pending, decoding, calls, plots = deque(items), {}, {}, []
    result = ExplainResult(total=len(items) + len(bad_rows))
    while pending or decoding or calls:
        while pending and len(decoding) + len(calls) < max_videos_in_flight:
            item = pending.popleft()
            meta_ref, clips_ref = decode_video_task.options(num_cpus=decode_num_cpus).remote(item, spec)
            decoding[meta_ref] = (item, clips_ref)
        [ref], _ = ray.wait(list(decoding) + list(calls), num_returns=1)
        if ref in decoding:
            item, clips_ref = decoding.pop(ref)
            try:
                meta = ray.get(ref)
            except ray.exceptions.RayError as e:  # the decode worker died (e.g. out of memory)
                meta = {"error": error_text(e), "stage": WORKER}
            if meta.get("error"):
                error = error_row(item["uri"], meta["stage"], meta["error"])
                rows.append(failed_row(item["video_id"], error, item.get("target")))
            else:
                calls[actor.explain.remote(clips_ref)] = (item, clips_ref)
            continue
        item, clips_ref = calls.pop(ref)
        try:
            feats, maps = ray.get(ref)
        except ray.exceptions.RayError as e:
            rows.append(failed_row(item["video_id"], error_row(item["uri"], MODEL, e), item.get("target")))
            continue
        write_map(output, item["video_id"], maps)
        title = f"{item['video_id']}" + (f" ({item['target']})" if item.get("target") else "")
        plots.append(map_plot_task.remote(clips_ref, maps, map_uri(output, item["video_id"], ".png"), title))
        rows.append(feature_row(item, feats.mean(axis=0), len(feats)))
        result.clips += len(feats)
    ray.get(plots)
    ray.kill(actor)
    order = {r["video_id"]: i for i, r in enumerate(list(items) + list(bad_rows))}
    rows.sort(key=lambda r: order.get(r["video_id"], len(order)))
    write_features(output, rows)
    result.silhouette = embed_and_score(output, rows, perplexity=perplexity, seed=seed)
    result.ok = sum(r["status"] == "ok" for r in rows)
    result.errors = len(rows) - result.ok
    result.rows, result.wall_s = rows, time.perf_counter() - t0
    return result
