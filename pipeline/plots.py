"""PNG plots: a training run's curves, a video's predicted timeline, rollout maps, t-SNE (no Ray).

    plot_metrics(records, "runs/debug/metrics.png")        # records of metrics.jsonl
    plot_timeline(row, names, "out/plots/v1.png", segments=row_segments)
    plot_rollout(clips, maps, "out/maps/v1.png")           # frames with attention rollout overlaid
    plot_tsne(points, labels, "out/tsne.png", title="...")  # 2-D embedding coloured by label

All render with matplotlib's Agg backend into memory and write the PNG atomically through
`pipeline.storage`, so the target may be local or on object storage.
"""

from __future__ import annotations

import io
import json
from typing import Any, Sequence

import numpy as np

from pipeline import storage


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display; imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, uri: str, **kwargs: Any) -> None:
    """Render `fig` to PNG bytes, close it, and write it atomically to `uri`."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    plt.close(fig)
    storage.write_bytes_atomic(uri, buf.getvalue())

def plot_metrics(records: list[dict[str, Any]], out_uri: str) -> None:
    """Loss, accuracy (train and val) and lr against step, as a PNG."""
    plt = _pyplot()
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    axes[0].plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val")
    axes[0].set_title("loss")
    axes[1].plot([r["step"] for r in train], [r["acc"] for r in train], label="train (batch)")
    axes[1].plot([r["step"] for r in val], [r["val_acc"] for r in val], "o-", label="val clip acc")
    axes[1].set_title("accuracy")
    axes[2].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[2].set_title("lr")
    for ax in axes:
        ax.set_xlabel("step")
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    _save(fig, out_uri, dpi=90)


def parse_segments(value: Any) -> list[tuple[float, float, str]]:
    """Known segments `[[start_sec, end_sec, label], ...]` (a list or its JSON text) -> tuples;
    [] when absent or unreadable (they only decorate plots)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return []
    try:
        segs = json.loads(value) if isinstance(value, str) else value
        return [(float(a), float(b), str(lab)) for a, b, lab in segs]
    except (TypeError, ValueError):
        return []


def class_color(index: int, num_classes: int) -> tuple[float, float, float]:
    """The colour of class `index` of `num_classes`: the same in every plot of a run, whichever
    classes a plot shows (tab10 / tab20 for up to 10 / 20 classes, else hues a golden ratio apart)."""
    import matplotlib.colors as mcolors

    plt = _pyplot()
    if num_classes <= 20:
        cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
        return tuple(float(v) for v in cmap(index % cmap.N)[:3])
    hue = (index * 0.6180339887498949) % 1.0
    return tuple(float(v) for v in mcolors.hsv_to_rgb((hue, 0.75, 0.8 if index % 2 else 0.95)))


TIMELINE_YLIM = (-0.04, 1.08)  # probabilities 0 and 1 drawn clear of the frame


def plot_timeline(row: dict[str, Any], names: Sequence[str], uri: str, top: int = 5,
                  segments: Any = None) -> None:
    """PNG of class probability over time for one video (its top classes), written atomically.

    Each class has its colour over `names` (`class_color`), so it looks the same in every plot.
    `segments` (known `[start, end, label]` spans, e.g. the synthetic corpus' `segments`
    column) are drawn as labelled bands behind the curves.
    """
    plt = _pyplot()
    tl = row["timeline"]
    starts = np.array([c["start_sec"] for c in tl])
    ends = np.array([c["end_sec"] for c in tl])
    probs = np.array([c["scores"] for c in tl])  # [K, C]
    classes = list(row["top_ids"][:top])
    fig, ax = plt.subplots(figsize=(11, 3.2), dpi=100)
    for j, (a, b, lab) in enumerate(parse_segments(segments)):
        ax.axvspan(a, b, color="0.9" if j % 2 else "0.82", zorder=0)
        ax.text((a + b) / 2, 1.04, f"true: {lab}", ha="center", va="bottom", fontsize=8, color="0.3",
                transform=ax.get_xaxis_transform())
    for c in classes:
        # a step per clip: its probability holds over [start, end)
        xs = np.stack([starts, ends], axis=1).reshape(-1)  # [2K]: s0 e0 s1 e1 ...
        ys = np.repeat(probs[:, c], 2)
        ax.plot(xs, ys, label=f"{names[c]}", linewidth=1.6, color=class_color(c, len(names)),
                zorder=3)  # over the frame and grid
    ax.set_xlim(0, max(float(ends.max()), row.get("duration") or 0.0))
    ax.set_ylim(*TIMELINE_YLIM)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    title = f"{row['video_id']}: {row['label']} ({row['score']:.2f})"
    if row.get("target"):
        title += f"   true: {row['target']}"
    ax.set_title(title, fontsize=10, pad=16)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, uri)


def plot_rollout(clips: np.ndarray, maps: np.ndarray, uri: str, title: str = "") -> None:
    """PNG of uint8 clips [K, T, S, S, 3] (one row per clip) with their rollout maps [K, T', h, w]
    overlaid (frame t shows map slice t * T' // T: a tubelet's map on each of its frames), one
    colour scale per clip."""
    import cv2

    plt = _pyplot()
    k, t = clips.shape[:2]
    fig, axes = plt.subplots(k, t, figsize=(1.6 * t, 1.6 * k + 0.4), squeeze=False)
    for i in range(k):
        top = max(float(maps[i].max()), 1e-12)
        for j in range(t):
            frame = clips[i, j]
            heat = cv2.resize(maps[i, j * maps.shape[1] // t].astype(np.float32), frame.shape[1::-1],
                              interpolation=cv2.INTER_NEAREST)
            ax = axes[i, j]
            ax.imshow(frame)
            ax.imshow(heat / top, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, uri, dpi=80)


def plot_tsne(points: np.ndarray, labels: Sequence[str | None], uri: str, title: str = "") -> None:
    """PNG scatter of 2-D points [N, 2] coloured by label (None: grey, "unlabelled")."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=100)
    names = sorted({lab for lab in labels if lab is not None})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for c, name in enumerate(names + [None]):
        sel = np.array([lab == name for lab in labels], dtype=bool)
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=14, label=name if name is not None else "unlabelled",
                       color=cmap(c % cmap.N) if name is not None else "0.6")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if names:
        ax.legend(fontsize=7, loc="best", frameon=False)
    fig.tight_layout()
    _save(fig, uri)
