"""Inference progress: a console line and progress.json at most every few seconds, and at the end."""

from __future__ import annotations

import io

from pipeline import storage
from pipeline.infer.progress import PROGRESS_FILE, Progress
from pipeline.progress import eta_seconds, format_duration


def test_durations_and_eta():
    assert [format_duration(s) for s in (None, 5, 65, 3 * 3600 + 720)] == ["?", "5s", "1m05s", "3h12m"]
    assert eta_seconds(0, 10, 5.0) is None and eta_seconds(5, 10, 10.0) == 10.0


def test_lines_every_interval_and_progress_json(tmp_path):
    now = [100.0]
    out, stream = str(tmp_path / "out"), io.StringIO()
    p = Progress(out, total=10, skipped=3, every_s=5.0, clock=lambda: now[0], stream=stream)
    assert p.update(0, 0, [0.0, 0.0]) is not None  # the first state is shown at once
    now[0] = 102.0
    assert p.update(1, 8, [1.0, 1.0]) is None  # too soon
    now[0] = 110.0
    state = p.update(5, 40, [5.0, 5.0])
    assert state["clips_per_s"] == 4.0 and state["actor_idle"] == 0.5 and state["eta_s"] == 10.0
    assert storage.read_json(storage.join(out, PROGRESS_FILE))["videos_done"] == 5
    now[0] = 111.0
    final = p.update(10, 80, [6.0, 6.0], final=True)
    assert final["finished"] and storage.read_json(storage.join(out, PROGRESS_FILE))["finished"]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[1] == "[infer] videos 5/10 (3 done before) | 4.0 clips/s | actor idle 50% | ETA 10s"
    assert lines[2].endswith("| done")


def test_the_line_keeps_coming_while_nothing_finishes(tmp_path):
    """While no video finishes (the first GPU node still starting), the state is shown every interval."""
    import io
    import time

    from pipeline.infer.progress import Progress

    out = io.StringIO()
    progress = Progress(str(tmp_path), total=4, every_s=0.05, stream=out)
    with progress.ticking(lambda: (0, 0, [])):
        deadline = time.monotonic() + 30
        while out.getvalue().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("[infer] videos 0/4 | ") for line in lines)
