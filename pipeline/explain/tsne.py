"""Exact t-SNE and the silhouette score in numpy (no sklearn; fine for a few thousand points).

    points = tsne(features, seed=0)                  # [N, D] -> [N, 2]
    score = silhouette(features, labels)             # in [-1, 1]; None below two labelled classes

t-SNE follows van der Maaten & Hinton (2008) with the usual optimiser settings: per-point
Gaussian bandwidths found by bisection to match `perplexity`, early exaggeration 12 for the first
100 iterations, momentum 0.5 then 0.8, adaptive gains. O(N^2) memory and time per iteration.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _sq_distances(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def _affinities(x: np.ndarray, perplexity: float) -> np.ndarray:
    """Symmetric joint probabilities P [N, N] of the input points."""
    n = len(x)
    d = _sq_distances(x)
    p = np.zeros((n, n))
    target = np.log(perplexity)
    for i in range(n):
        di = np.delete(d[i], i)
        lo, hi, beta = 0.0, np.inf, 1.0 / max(np.median(di), 1e-12)
        for _ in range(64):  # bisection on beta = 1 / (2 sigma^2) for the row's entropy
            w = np.exp(-(di - di.min()) * beta)
            pi = w / w.sum()
            entropy = -(pi * np.log(np.maximum(pi, 1e-300))).sum()
            if abs(entropy - target) < 1e-5:
                break
            if entropy > target:
                lo, beta = beta, beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi, beta = beta, (beta + lo) / 2
        p[i, np.arange(n) != i] = pi
    p = (p + p.T) / (2.0 * n)
    return np.maximum(p, 1e-12)


def tsne(x: np.ndarray, dims: int = 2, perplexity: float = 30.0, iters: int = 750, seed: int = 0,
         learning_rate: float = 200.0) -> np.ndarray:
    """2-D (or `dims`-D) t-SNE embedding [N, dims] of points `x` [N, D]; the perplexity is capped
    at (N - 1) / 3 so small sets work."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 3:
        return np.zeros((n, dims))
    p = _affinities(x, min(perplexity, (n - 1) / 3.0))
    rng = np.random.default_rng(seed)
    y = rng.normal(0.0, 1e-4, size=(n, dims))
    velocity, gains = np.zeros_like(y), np.ones_like(y)
    for it in range(iters):
        num = 1.0 / (1.0 + _sq_distances(y))  # Student-t kernel [N, N]
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        pe = p * (12.0 if it < 100 else 1.0)  # early exaggeration
        w = (pe - q) * num
        grad = 4.0 * (w.sum(axis=1)[:, None] * y - w @ y)  # sum_j w_ij (y_i - y_j)
        gains = np.where(np.sign(grad) != np.sign(velocity), gains + 0.2, gains * 0.8).clip(min=0.01)
        velocity = (0.5 if it < 250 else 0.8) * velocity - learning_rate * gains * grad
        y = y + velocity
        y = y - y.mean(axis=0)
    return y


def silhouette(x: np.ndarray, labels: Sequence) -> float | None:
    """Mean silhouette (Euclidean) of points `x` [N, D] under `labels`; points labelled None are
    left out; None when fewer than two classes remain. A point alone in its class scores 0."""
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    names = [labels[i] for i in keep]
    classes = sorted(set(names))
    if len(classes) < 2:
        return None
    d = np.sqrt(_sq_distances(np.asarray(x, dtype=np.float64)[keep]))
    ids = np.array([classes.index(c) for c in names])
    scores = []
    for i in range(len(keep)):
        own = ids == ids[i]
        if own.sum() < 2:
            scores.append(0.0)
            continue
        a = d[i, own].sum() / (own.sum() - 1)  # d[i, i] = 0
        b = min(d[i, ids == c].mean() for c in range(len(classes)) if c != ids[i])
        scores.append((b - a) / max(a, b) if max(a, b) > 0 else 0.0)
    return float(np.mean(scores))
