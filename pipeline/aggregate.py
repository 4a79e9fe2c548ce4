"""Clip scores -> one video prediction, plus a per-clip timeline. Pure numpy, no ray.

A long video is covered by K clips; the model gives clip logits `[K, C]`. The video score is
one of (the HowTo100M protocol averages clip predictions: docs/DATA.md):

- `mean_logits`: softmax of the mean clip logits;
- `mean_probs`:  mean of the clip softmax probabilities;
- `max`:         per class, the highest clip probability (not renormalised: a class that is
                 certain in one clip scores ~1 even if it is absent elsewhere).

Every function here is invariant to the order of the clips: the timeline is sorted by time.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

Aggregate = Literal["mean_logits", "mean_probs", "max"]
AGGREGATES: tuple[str, ...] = ("mean_logits", "mean_probs", "max")


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64 along `axis`."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _check_clip_logits(clip_logits: np.ndarray) -> np.ndarray:
    x = np.asarray(clip_logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"clip logits must be [K>0, C>0], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("clip logits contain NaN or inf")
    return x


def aggregate(clip_logits: np.ndarray, method: str = "mean_logits") -> np.ndarray:
    """Video scores `[C]` (float64) from clip logits `[K, C]` with `method` (see module doc)."""
    x = _check_clip_logits(clip_logits)
    if method == "mean_logits":
        return softmax(x.mean(axis=0))
    if method == "mean_probs":
        return softmax(x, axis=1).mean(axis=0)
    if method == "max":
        return softmax(x, axis=1).max(axis=0)
    raise ValueError(f"unknown aggregate {method!r}; choose one of {', '.join(AGGREGATES)}")


def top_k(scores: np.ndarray, k: int, names: Sequence[str] | None = None) -> list[tuple[int, str, float]]:
    """The `k` best classes of video `scores` `[C]` as `(class_id, name, score)`, best first.

    Ties are broken by the lower class id, so the result is deterministic.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be [C], got shape {s.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if names is not None and len(names) != s.shape[0]:
        raise ValueError(f"{len(names)} class names for {s.shape[0]} classes")
    order = np.lexsort((np.arange(s.shape[0]), -s))[:k]  # primary key: -score; then id
    return [(int(i), names[i] if names is not None else str(int(i)), float(s[i])) for i in order]


def timeline(starts: Sequence[float], ends: Sequence[float], clip_logits: np.ndarray) -> list[dict]:
    """Per-clip `{start_sec, end_sec, scores}` (scores = clip probabilities), sorted by time."""
    x = _check_clip_logits(clip_logits)
    st = np.asarray(starts, dtype=np.float64)
    en = np.asarray(ends, dtype=np.float64)
    if st.shape != (x.shape[0],) or en.shape != (x.shape[0],):
        raise ValueError(f"{st.shape} starts and {en.shape} ends for {x.shape[0]} clips")
    probs = softmax(x, axis=1)
    order = np.lexsort((en, st))
    return [
        {"start_sec": float(st[i]), "end_sec": float(en[i]), "scores": probs[i].astype(np.float32).tolist()}
        for i in order
    ]


def label_at(segments: Sequence[Sequence], t: float):
    """The label of the `[start_sec, end_sec, label]` segment containing time `t`, else None."""
    for start, end, label in segments:
        if float(start) <= t < float(end):
            return label
    return None
