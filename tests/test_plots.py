"""Timeline plots: a class has one colour in every plot of a run, and a probability of 1 (or 0)
is drawn clear of the axes frame, over it."""

from __future__ import annotations

import matplotlib.colors as mcolors
import pytest

from pipeline import plots

NAMES = ["left", "right", "up", "down"]


def _row(video_id: str, scores: list[list[float]], top_ids: list[int]) -> dict:
    timeline = [{"start_sec": 2.0 * i, "end_sec": 2.0 * i + 2.0, "scores": s} for i, s in enumerate(scores)]
    return {"video_id": video_id, "timeline": timeline, "top_ids": top_ids, "label": NAMES[top_ids[0]],
            "score": max(scores[0]), "duration": 2.0 * len(scores)}


@pytest.fixture()
def figures(monkeypatch):
    """The figures plot_timeline renders, kept open instead of saved."""
    kept = []
    monkeypatch.setattr(plots, "_save", lambda fig, uri, **kw: kept.append(fig))
    return kept


def _colours(fig) -> dict[str, str]:
    ax = fig.axes[0]
    return {line.get_label(): mcolors.to_hex(line.get_color()) for line in ax.get_lines()}


def test_a_class_keeps_its_colour_in_every_plot_of_a_run(figures):
    a = _row("a", [[0.1, 0.2, 0.6, 0.1]] * 3, top_ids=[2, 1, 0, 3])  # up first
    b = _row("b", [[0.1, 0.7, 0.1, 0.1]] * 3, top_ids=[1, 3, 2, 0])  # right first, up third
    plots.plot_timeline(a, NAMES, "unused-a.png", top=3)
    plots.plot_timeline(b, NAMES, "unused-b.png", top=3)
    ca, cb = _colours(figures[0]), _colours(figures[1])
    assert ca["up"] == cb["up"] and ca["right"] == cb["right"]  # by class, not by order of appearance
    assert len(set(ca.values())) == 3
    assert ca["up"] == mcolors.to_hex(plots.class_color(2, 4))


def test_many_classes_get_distinct_colours():
    colours = {mcolors.to_hex(plots.class_color(i, 1059)) for i in range(60)}
    assert len(colours) == 60


def test_a_line_at_probability_one_is_drawn_clear_of_the_frame(figures):
    row = _row("sure", [[0.0, 0.0, 1.0, 0.0]] * 3, top_ids=[2, 0, 1, 3])
    plots.plot_timeline(row, NAMES, "unused.png", top=2)
    fig = figures[0]
    ax = fig.axes[0]
    fig.canvas.draw()
    to_px = ax.transData.transform
    bottom, top = ax.get_ylim()
    line_width_px = max(line.get_linewidth() for line in ax.get_lines()) * fig.dpi / 72
    # at least the line's width between the line at 1.0 (and at 0.0) and the frame
    assert to_px((0, top))[1] - to_px((0, 1.0))[1] >= 2 * line_width_px
    assert to_px((0, 0.0))[1] - to_px((0, bottom))[1] >= 2 * line_width_px
    assert all(line.get_zorder() > spine.get_zorder() for line in ax.get_lines() for spine in ax.spines.values())
