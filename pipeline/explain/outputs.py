"""What `jobs.explain` writes (no Ray): per-video maps, the features table, t-SNE plot, summary.

    O/maps/<safe id>.npy   float32 [T', h, w], the clips' rollout maps averaged (sums to 1)
    O/maps/<safe id>.png   each clip's frames (rows) with its own map overlaid
    O/features.parquet     one row per input video: video_id, uri, label, status, stage, error,
                           num_clips, embedding (list<float>, the clips' pre-head features averaged)
    O/tsne.png             t-SNE of the ok rows' embeddings, coloured by label
    O/summary.json         settings, recipe, counts, silhouette of the embeddings by label
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.explain.tsne import silhouette, tsne
from pipeline.plots import plot_tsne

MAPS_DIR = "maps"
MARKER = "_explain.json"  # the run's settings
OWNED = (MAPS_DIR, MARKER, "features.parquet", "tsne.png", "summary.json")  # what --overwrite removes

SCHEMA = pa.schema([
    ("video_id", pa.string()), ("uri", pa.string()), ("label", pa.string()), ("status", pa.string()),
    ("stage", pa.string()), ("error", pa.string()), ("num_clips", pa.int32()),
    ("embedding", pa.list_(pa.float32())),
])


def map_uri(output: str, video_id: str, suffix: str) -> str:
    """`maps/<id><suffix>`, the id sanitised (`storage.safe_relpath`) and proven inside `output/maps`."""
    return storage.join_inside(storage.join(output, MAPS_DIR), storage.safe_relpath(video_id, suffix))


def write_map(output: str, video_id: str, clip_maps: np.ndarray) -> str:
    """Write the mean of a video's clip maps [K, T', h, w] as float32 `.npy`; returns its URI."""
    import io

    buf = io.BytesIO()
    np.save(buf, clip_maps.mean(axis=0).astype(np.float32))
    uri = map_uri(output, video_id, ".npy")
    storage.write_bytes_atomic(uri, buf.getvalue())
    return uri


def feature_row(item: dict[str, Any], embedding: np.ndarray, num_clips: int) -> dict[str, Any]:
    return {"video_id": item["video_id"], "uri": item["uri"], "label": item.get("target"), "status": "ok",
            "stage": None, "error": None, "num_clips": int(num_clips),
            "embedding": [float(v) for v in np.asarray(embedding, dtype=np.float32)]}


def failed_row(video_id: str, error: dict[str, str], label: str | None = None) -> dict[str, Any]:
    """The features-table row of a video that could not be explained: its error row
    (`pipeline.data.errors.error_row`: uri, stage, error) with the video's id and label."""
    return {"video_id": video_id, "label": label, "status": "error", "num_clips": 0, "embedding": None, **error}


def write_features(output: str, rows: Sequence[dict[str, Any]]) -> None:
    storage.write_parquet_atomic(storage.join(output, "features.parquet"),
                                 pa.Table.from_pylist(list(rows), schema=SCHEMA))


def embed_and_score(output: str, rows: Sequence[dict[str, Any]], *, perplexity: float = 30.0,
                    seed: int = 0) -> float | None:
    """t-SNE of the ok rows' embeddings to `tsne.png` (coloured by label), and their silhouette
    by label (None with fewer than two labelled classes, or no ok rows)."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return None
    x = np.array([r["embedding"] for r in ok], dtype=np.float64)
    labels = [r["label"] for r in ok]
    score = silhouette(x, labels)
    title = f"t-SNE of {len(ok)} video features"
    title += f"; silhouette {score:.3f}" if score is not None else " (no labels: no silhouette)"
    plot_tsne(tsne(x, perplexity=perplexity, seed=seed), labels, storage.join(output, "tsne.png"), title)
    return score

