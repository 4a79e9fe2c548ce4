"""bench/feed.py --device cuda: the parts that run without a GPU (the refusal, the arithmetic, the
CPU peer of the NVDEC loop); the GPU rows themselves only run on a CUDA machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import feed
from bench.feed_cuda import PlainReader, cores_needed, measure_step, mfu, nvdec_report
from conftest import frame_index
from pipeline.data.decode import Video


def test_device_cuda_without_a_gpu_is_one_line_and_exit_2(user_error, tmp_path, monkeypatch):
    # pinned to "no GPU" so the check is the same on a GPU node (where it would start the bench)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = user_error(feed.main, ["--device", "cuda", "--cache", tmp_path / "cache"], "no CUDA device")
    assert "run it on a GPU node" in line
    user_error(feed.main, ["--nvdec", "--cache", tmp_path / "cache"], "--nvdec needs --device cuda")


def test_cores_per_gpu_follow_the_measured_step_time():
    assert cores_needed(step_s=0.5, batch=32, cpu_s_per_clip=0.025) == pytest.approx(1.6)  # 64 clips/s
    # a step measured at exactly 40 % MFU needs the cores the 40 % MFU estimate prints
    gmac, batch, cpu = 195.8, 32, 0.0836
    rate = feed.clips_per_s_per_gpu(gmac)
    step_s = batch / rate
    assert mfu(step_s, batch, gmac, feed.H200_TFLOPS) == pytest.approx(feed.MFU)
    assert cores_needed(step_s, batch, cpu) == pytest.approx(rate * cpu)
    assert mfu(2 * step_s, batch, gmac, feed.H200_TFLOPS) == pytest.approx(feed.MFU / 2)


def test_plain_loop_with_the_cpu_decoder_reads_the_pipelines_frames(index_video):
    path = index_video(num_frames=60, gop=12, bframes=2)  # lossless frames that encode their index
    indices = [59, 0, 13, 12, 14, 40, 13, 1, 35, 58]  # unsorted, repeated, across and within GOPs
    with PlainReader(path, "h264") as reader:
        frames = reader.read(indices)
    assert [frame_index(f) for f in frames] == indices
    with Video(path) as video:
        expected, _ = video.read(indices)
    assert np.array_equal(frames, expected)
    with pytest.raises(ValueError, match="decoder must be one of"):
        PlainReader(path, "h265")


def test_nvdec_report_has_cpu_rows_and_one_line_per_gpu_decoder_that_cannot_run(index_video, capsys):
    files = {"source": index_video(num_frames=90, gop=30), "copy": index_video(num_frames=90, gop=6)}
    nvdec_report(files, 2, lambda: "load 0")
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert "| source | h264 (CPU) |" in out and "| copy | h264 (CPU) |" in out
    for decoder in ("nvdec", "h264_cuvid"):
        rows = [line for line in out.splitlines() if line.startswith(("| source | " + decoder, "| copy | " + decoder))]
        skipped = [line for line in out.splitlines() if line.startswith(f"{decoder}: cannot decode on the GPU")]
        assert (len(rows), len(skipped)) in ((2, 0), (0, 1)), out  # both files measured, or one line
        if not torch.cuda.is_available():
            assert skipped, out


def test_a_preset_that_cannot_train_is_a_one_line_row_not_a_traceback():
    result = measure_step("debug", 2, True, 4)  # tiny preset: on a GPU node it trains and is timed
    if torch.cuda.is_available():
        assert isinstance(result, float) and result > 0
    else:
        assert isinstance(result, str) and result.startswith("failed: ") and "\n" not in result, result
