"""metrics.jsonl and the running window between logged steps (pipeline.train.metrics)."""

from __future__ import annotations

import re

import pytest
import torch

from pipeline.plots import plot_metrics
from pipeline.train.metrics import Window, read_metrics, write_metrics


def test_metrics_jsonl_roundtrip_and_plot(tmp_path):
    records = [{"kind": "train", "step": s, "loss": 1.0 / s, "acc": 0.1 * s, "lr": 0.01} for s in range(1, 4)]
    records.append({"kind": "val", "step": 3, "val_loss": 0.5, "val_acc": 0.7})
    write_metrics(str(tmp_path), records)
    assert read_metrics(str(tmp_path)) == records
    plot_metrics(records, str(tmp_path / "metrics.png"))
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_window_sums_steps_and_reports_rates():
    window = Window()
    window.add({"loss_sum": 6.0, "correct": 3.0, "clips": 4, "wait_s": 0.5}, seconds=2.0)
    window.add({"loss_sum": 2.0, "correct": 1.0, "clips": 4, "wait_s": 0.0}, seconds=2.0)
    m = window.metrics(step=10, steps_per_epoch=4, lr=0.1, world=2, device=torch.device("cpu"))
    assert m["kind"] == "train" and m["step"] == 10 and m["epoch"] == 2.5 and m["lr"] == 0.1
    assert m["loss"] == pytest.approx(1.0) and m["acc"] == pytest.approx(0.5)
    assert m["clips_per_s"] == pytest.approx(8 * 2 / 4.0)  # clips of all workers per second
    assert m["data_wait_frac"] == pytest.approx(0.5 / 4.0)
    assert m["step_time_s"] == pytest.approx(2.0)
    assert m["peak_mem_mb"] > 0 and m["time"] > 0
    assert m["decode_work"] is None  # no counters in these batches


def test_window_reports_decode_work_and_the_line_shows_it():
    from pipeline.train.metrics import progress_line

    window = Window()
    window.add({"loss_sum": 1.0, "correct": 1.0, "clips": 2, "wait_s": 0.0, "decoded_frames": 100,
                "kept_frames": 16}, seconds=1.0)
    window.add({"loss_sum": 1.0, "correct": 1.0, "clips": 2, "wait_s": 0.0, "decoded_frames": 28,
                "kept_frames": 16}, seconds=1.0)
    m = window.metrics(step=2, steps_per_epoch=4, lr=0.1, world=1, device=torch.device("cpu"))
    assert m["decode_work"] == pytest.approx(128 / 32)
    assert " decode 4.0x " in progress_line(m, 10, 5.0)


def test_an_empty_window_reports_zeros_not_errors():
    m = Window().metrics(step=1, steps_per_epoch=1, lr=0.0, world=1, device=torch.device("cpu"))
    assert m["loss"] == 0.0 and m["acc"] == 0.0 and m["clips_per_s"] == 0.0 and m["data_wait_frac"] == 0.0
    assert m["step_time_s"] == pytest.approx(0.0, abs=1e-6)


def test_rank_0_prints_a_line_and_keeps_metrics_jsonl_current_every_log(tmp_path, capsys):
    from types import SimpleNamespace

    from pipeline.train.loop import Reporter

    plan = SimpleNamespace(total_steps=40, steps_per_epoch=10, accum=1, run_dir=str(tmp_path / "run"))
    reporters = [Reporter(None, None, None, {}, plan, rank) for rank in (0, 1)]
    for r in reporters:
        r.start(0, resumed=False, world=2)
    for step in (10, 20):
        record = {"kind": "train", "step": step, "epoch": step / 10, "loss": 1.25, "acc": 0.5, "lr": 0.01,
                  "clips_per_s": 42.0, "data_wait_frac": 0.03}
        for r in reporters:
            r.log(record)
        assert [x["step"] for x in read_metrics(plan.run_dir) if x["kind"] == "train"] == [10, 20][:step // 10]
    lines = [x for x in capsys.readouterr().out.splitlines() if "[train] step" in x]
    assert len(lines) == 2  # rank 0 only
    assert lines[0].startswith("[train] step 10/40 epoch 1.00: loss 1.2500 acc 0.500 lr 0.01 42.0 clips/s")
    assert "data-wait 3%" in lines[0] and " ETA " in lines[0]
    # the ETA counts from the first log line (start-up is not a step's cost): unknown until the second
    assert lines[0].endswith("ETA ?") and re.search(r"ETA \d+s$", lines[1]), lines
