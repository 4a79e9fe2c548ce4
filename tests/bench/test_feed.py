"""bench/feed.py's pure measurement: CPU per clip and the part of it inside FFmpeg's decoder."""

from __future__ import annotations

from bench import feed


def test_pure_cpu_reports_the_decoders_share_and_packets(index_video):
    path = index_video(num_frames=120, gop=12, bframes=3, size=(96, 64))
    got = feed.pure_cpu(path, feed.data_config(4, 8, 48), rows=4)
    assert got["work"] >= 1.0  # frames decoded per frame kept
    assert 0.0 < got["decoder"] < got["cpu"]  # the decoder is part of the row function's CPU
    assert got["packets"] >= 4  # at least the 4 kept frames went through the decoder, per clip


def test_steps_only_hands_each_preset_its_config_and_cpu_figures_to_the_gpu_report(monkeypatch):
    """The GPU half without Ray (--steps-only): the step report itself needs CUDA, so it is replaced
    by a recorder here; what it is given is what a GPU run would measure."""
    got = {}
    monkeypatch.setattr(feed, "step_report", lambda rows, batches, peak, load: got.update(rows=rows, batches=batches))
    args = feed.parse_args(["--device", "cuda", "--steps-only", "--cpu-ms", "200", "50", "400", "160", "550", "310"])
    assert feed.gpu_half(args, feed.given_cpu(args), {}) == 0
    by_name = {row[0]: row for row in got["rows"]}
    assert list(by_name) == list(feed.PRESETS)
    name, preset, gmac, rate, cpu_s, cpu_c, ckpt, classes = by_name["base 8x32@224"]
    assert (preset, round(gmac, 1), cpu_s, cpu_c, ckpt, classes) == ("timesformer_base", 195.8, 0.2, 0.05, False, 400)
    assert by_name["L 96x4@224"][6:] == (True, 1059)  # L trains with activation checkpointing, HowTo100M's tasks
    assert got["batches"] == list(feed.GPU_BATCH)


def test_gpu_flags_need_cuda():
    assert feed.main(["--steps-only"]) == 2
    assert feed.main(["--nvdec"]) == 2
