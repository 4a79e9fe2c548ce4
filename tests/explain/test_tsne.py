"""t-SNE and silhouette in numpy: hand cases and separation of clear clusters."""

from __future__ import annotations

import numpy as np

from pipeline.explain.tsne import silhouette, tsne


def test_silhouette_equals_a_hand_computation():
    """1-D points a: 0, 1; b: 10, 11. Point 0: a = 1, b = (10 + 11) / 2 -> (10.5 - 1) / 10.5;
    point 1: a = 1, b = (9 + 10) / 2 -> 8.5 / 9.5; b mirrors a."""
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    expected = (9.5 / 10.5 + 8.5 / 9.5) / 2
    assert abs(silhouette(x, ["a", "a", "b", "b"]) - expected) < 1e-12
    # unlabelled points are left out; one class gives no score; a lone point scores 0
    assert abs(silhouette(np.vstack([x, [[5.0]]]), ["a", "a", "b", "b", None]) - expected) < 1e-12
    assert silhouette(x, ["a"] * 4) is None
    assert silhouette(x, ["a", "a", "b", "c"]) < expected


def test_tsne_keeps_clusters_apart_and_is_reproducible():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(4.0 * c, 1.0, (25, 16)) for c in range(3)])
    labels = [str(i // 25) for i in range(75)]
    y = tsne(x, seed=1, iters=400)
    assert y.shape == (75, 2) and np.isfinite(y).all()
    assert silhouette(y, labels) > 0.6
    assert np.array_equal(y, tsne(x, seed=1, iters=400))
    noise = rng.normal(size=(75, 16))
    assert silhouette(noise, labels) < 0.1  # no structure, no separation
