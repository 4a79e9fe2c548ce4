"""The prepared GPU run (bench/gpu_session.sh) and what it relies on: the device image has no Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benches_import_and_plan_without_ray():
    code = ("import sys; sys.modules['ray'] = None\n"  # `import ray` raises ImportError, as on the device image
            "import bench.model, bench.feed, bench.feed_cuda\n"
            "from bench import feed\n"
            "for name in feed.PRESETS: feed.train_config(name)\n"
            "print(round(feed.gmacs('timesformer_base'), 1))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "195.8"  # TimeSformer 8x224 GMAC per clip, counted without Ray


def test_the_script_runs_every_step_and_says_why_without_a_gpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "bench/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feed.txt", "gpu.txt", "model.txt", "model_l.txt"]
    for name, step in (("model_l.txt", "bench.model (TimeSformer-L)"), ("model.txt", "bench.model")):
        text = (tmp_path / name).read_text()
        assert "no CUDA device" in text and f"{step} exit 1" in text  # one line, not a traceback
        assert "Traceback" not in text
    feed = (tmp_path / "feed.txt").read_text()
    assert "no CUDA device" in feed and "bench.feed exit 2" in feed
