"""Memory stays bounded for long videos (slow): a 40-minute video whose decoded clips are larger
than the whole object store goes through inference without the store spilling.

The clips of one video stream through Ray Data in blocks of one seek pass (`clip.clips_per_decode`
clips), scored and freed as they come, so what the object store holds is a few blocks, whatever
the video's length. The run is its own driver with its own local Ray (a 100 MB object store, the
smallest Ray allows is 75 MB), so that the store's spill counter is this run's alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.data import synthetic

REPO = Path(__file__).resolve().parents[2]
DRIVER = r"""
import json, sys, ray
from ray._private.internal_api import memory_summary
from pipeline.infer import ClipOverrides, InferConfig, run_inference
ckpt, video, out = sys.argv[1:4]
ray.init(address="local", num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False,
         logging_level="ERROR")
cfg = InferConfig(clip=ClipOverrides(num_frames=4, sampling_rate=8, crop_size=64, short_side=64), batch_size=16,
                  block_mb=4)
res = run_inference(ckpt, [{"video_id": "long", "uri": video}], out, cfg, device="cpu")
summary = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)  # this Ray, not another on the machine
print("RESULT " + json.dumps({"ok": res.ok, "clips": res.clips, "summary": summary}))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_video_larger_than_the_object_store_streams_through_without_spilling(tmp_path):
    import torch

    from pipeline.model import create, save

    video = str(tmp_path / "long.mp4")
    synthetic.write_long_video(video, [k % 4 for k in range(160)], segment_seconds=15, fps=15, size=(96, 72),
                               seed=7, gop=30)  # 40 min, 36,000 frames
    torch.manual_seed(0)
    ckpt = str(tmp_path / "model.pt")
    save(create("debug", num_classes=4, image_size=64), ckpt)
    proc = subprocess.run([sys.executable, "-c", DRIVER, ckpt, video, str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, timeout=840,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                               "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    clip_bytes = 4 * 64 * 64 * 3
    assert result["ok"] == 1 and result["clips"] == 2250  # 36,000 frames / 16 per clip
    assert result["clips"] * clip_bytes > 100 * 2**20  # the decoded clips outweigh the object store
    assert "Spilled" not in result["summary"] or "Spilled 0 MiB" in result["summary"], result["summary"]
