"""Clip -> video aggregation on plain arrays: known values and order invariance."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.aggregate import AGGREGATES, aggregate, label_at, softmax, timeline, top_k


def test_softmax_known_values_and_stability():
    p = softmax(np.array([0.0, np.log(3.0)]))
    np.testing.assert_allclose(p, [0.25, 0.75])
    big = softmax(np.array([1000.0, 1000.0]))  # would overflow without the max shift
    np.testing.assert_allclose(big, [0.5, 0.5])


def test_mean_logits_known_value():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(aggregate(logits, "mean_logits"), softmax(np.array([1.0, 0.0])))


def test_mean_probs_known_value():
    # clip 1 is certain of class 0 (probs ~[1, 0]); clip 2 is undecided ([0.5, 0.5])
    logits = np.array([[50.0, 0.0], [3.0, 3.0]])
    np.testing.assert_allclose(aggregate(logits, "mean_probs"), [0.75, 0.25], atol=1e-12)


def test_max_is_highest_clip_probability_per_class():
    logits = np.array([[np.log(9.0), 0.0], [0.0, np.log(4.0)]])  # probs [.9,.1] and [.2,.8]
    np.testing.assert_allclose(aggregate(logits, "max"), [0.9, 0.8])


def test_methods_can_disagree():
    # one confident clip for class 0 against two mildly-for-class-1 clips
    logits = np.array([[10.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    assert aggregate(logits, "mean_logits").argmax() == 0  # mean logits [3.33, 1.33]
    assert aggregate(logits, "mean_probs").argmax() == 1  # [0.41, 0.59]
    assert aggregate(logits, "max").argmax() == 0  # [1.0, 0.88]


@pytest.mark.parametrize("method", AGGREGATES)
def test_order_invariant(method):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(17, 6)) * 3
    ref = aggregate(logits, method)
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(17)
        np.testing.assert_allclose(aggregate(logits[perm], method), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["mean_logits", "mean_probs"])
def test_mean_scores_are_distributions(method):
    logits = np.random.default_rng(1).normal(size=(5, 4))
    s = aggregate(logits, method)
    assert s.shape == (4,) and np.all(s >= 0)
    assert s.sum() == pytest.approx(1.0)


def test_single_clip_all_methods_equal_its_softmax():
    logits = np.array([[0.3, -1.0, 2.0]])
    for m in AGGREGATES:
        np.testing.assert_allclose(aggregate(logits, m), softmax(logits[0]))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate(np.zeros((2, 3)), "median")
    with pytest.raises(ValueError, match=r"\[K>0, C>0\]"):
        aggregate(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"\[K>0, C>0\]"):
        aggregate(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        aggregate(np.array([[np.nan, 0.0]]))


def test_top_k_order_names_and_ties():
    scores = np.array([0.1, 0.4, 0.4, 0.05, 0.05])
    names = ["a", "b", "c", "d", "e"]
    assert top_k(scores, 3, names) == [(1, "b", 0.4), (2, "c", 0.4), (0, "a", 0.1)]
    assert [c for c, _, _ in top_k(scores, 10)] == [1, 2, 0, 3, 4]  # k > C: all classes
    with pytest.raises(ValueError, match="class names"):
        top_k(scores, 1, ["a"])
    with pytest.raises(ValueError, match="k must be"):
        top_k(scores, 0)


def test_timeline_sorted_by_time_whatever_the_clip_order():
    starts = np.array([0.0, 8.0, 16.0, 24.0])
    ends = starts + 8.0
    logits = np.eye(4) * 5.0
    ref = timeline(starts, ends, logits)
    perm = np.array([2, 0, 3, 1])
    assert timeline(starts[perm], ends[perm], logits[perm]) == ref
    assert [r["start_sec"] for r in ref] == [0.0, 8.0, 16.0, 24.0]
    assert [int(np.argmax(r["scores"])) for r in ref] == [0, 1, 2, 3]
    assert all(sum(r["scores"]) == pytest.approx(1.0, abs=1e-5) for r in ref)
    with pytest.raises(ValueError, match="starts"):
        timeline(starts[:3], ends, logits)


def test_label_at():
    segs = [[0.0, 20.0, "left"], [20.0, 40.0, "up"]]
    assert label_at(segs, 0.0) == "left"
    assert label_at(segs, 19.99) == "left"
    assert label_at(segs, 20.0) == "up"
    assert label_at(segs, 40.0) is None
