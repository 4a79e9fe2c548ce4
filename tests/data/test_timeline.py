"""Frame index <-> pts arithmetic (`pipeline.data.timeline`)."""

from __future__ import annotations

from fractions import Fraction

from pipeline.data.timeline import Timeline, index_is_regular, table_is_regular

CASES = [(Fraction(30000, 1001), Fraction(1, 90000)), (Fraction(2), Fraction(1)), (Fraction(24), Fraction(1, 1000)),
         (Fraction(30), Fraction(1, 15360)), (Fraction(25), Fraction(1, 60)), (Fraction(29), Fraction(1, 600))]


def test_regular_target_pts_rounds_like_fractions_half_to_even():
    # integer math in `target_pts` must give round(i / rate / time_base) exactly, ties to even
    for rate, tb in CASES:
        tl = Timeline.regular(7, tb, rate, 10_000)
        assert [tl.target_pts(i) for i in range(-5, 400)] == [7 + round(Fraction(i) / rate / tb) for i in range(-5, 400)]
    assert [Timeline.regular(0, Fraction(1), Fraction(2), 10).target_pts(i) for i in (1, 3, 5)] == [0, 2, 2]  # ties


class _Entry:
    def __init__(self, timestamp: int):
        self.timestamp = timestamp


def test_regularity_checks_allow_one_tick_of_rounding_and_nothing_more():
    rate, tb = Fraction(30000, 1001), Fraction(1, 1000)  # 33.367 ms per frame in 1 ms ticks
    pts = [round(Fraction(i) / rate / tb) for i in range(300)]
    assert table_is_regular(pts, rate, tb)
    assert index_is_regular([_Entry(p) for p in pts], len(pts), rate, tb)
    bumped = pts[:150] + [p + 3 for p in pts[150:]]  # a 3 ms jump: not one frame step
    assert not table_is_regular(bumped, rate, tb)
    assert not index_is_regular([_Entry(p) for p in bumped], len(bumped), rate, tb)
