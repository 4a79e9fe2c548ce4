"""bench/feed.py's pure measurement: CPU per clip and the part of it inside FFmpeg's decoder."""

from __future__ import annotations

from bench import feed


def test_pure_cpu_reports_the_decoders_share_and_packets(index_video):
    path = index_video(num_frames=120, gop=12, bframes=3, size=(96, 64))
    got = feed.pure_cpu(path, feed.data_config(4, 8, 48), rows=4)
    assert got["work"] >= 1.0  # frames decoded per frame kept
    assert 0.0 < got["decoder"] < got["cpu"]  # the decoder is part of the row function's CPU
    assert got["packets"] >= 4  # at least the 4 kept frames went through the decoder, per clip
