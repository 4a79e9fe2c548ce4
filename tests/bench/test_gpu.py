"""bench/gpu.sh, the GPU benchmarks in one run, and what its Ray-free steps rely on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu.sh"


def test_the_model_and_feed_gpu_benches_import_and_plan_without_ray():
    # a GPU machine with torch but no Ray can still run bench.model and bench.feed --steps-only
    code = ("import sys; sys.modules['ray'] = None\n"  # `import ray` raises ImportError
            "import bench.model, bench.feed, bench.feed_cuda\n"
            "from bench import feed\n"
            "for name in feed.PRESETS: feed.train_config(name)\n"
            "print(round(feed.gmacs('timesformer_base'), 1))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "195.8"  # TimeSformer 8x224 GMAC per clip, counted without Ray


def test_without_a_gpu_it_says_so_in_one_line_and_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "numbers")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no CUDA device" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "numbers").exists()


def test_every_step_is_a_bench_module_with_flags_it_accepts():
    steps = re.findall(r"^step (\w+) \S+ (bench\.\w+) (.*)$", SCRIPT.read_text(), re.M)
    assert [name for name, _, _ in steps] == ["model_l", "model", "feed", "train", "infer"]
    for name, module, args in steps:
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
        flags = re.findall(r"(--[a-z][a-z-]*)", args)
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        for flag in flags:
            assert f'"{flag}"' in source, f"{name}: {module} has no {flag}"
