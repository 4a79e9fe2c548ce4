"""`pipeline.infer` is importable without Ray; its Ray-using names load on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PURE = ["pipeline.infer", "pipeline.infer.config", "pipeline.infer.inputs", "pipeline.infer.decode",
        "pipeline.infer.collect", "pipeline.infer.outputs", "pipeline.infer.progress", "pipeline.infer.pool",
        "pipeline.infer.actor"]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_pure_modules_do_not_import_ray():
    code = f"import sys\nfor m in {PURE!r}: __import__(m)\nprint('ray' in sys.modules)"
    assert _run(code) == "False"


def test_the_ray_names_resolve_from_the_package():
    code = ("import pipeline.infer as p\n"
            "from pipeline.infer import run_inference, decode_video_task, plot_task, gpu_capacity\n"
            "from pipeline.infer import driver, tasks, pool\n"
            "assert (run_inference, gpu_capacity) == (driver.run_inference, pool.gpu_capacity)\n"
            "assert (decode_video_task, plot_task) == (tasks.decode_video_task, tasks.plot_task)\n"
            "try:\n    p.no_such_name\nexcept AttributeError as e:\n    print(e)")
    assert _run(code) == "module 'pipeline.infer' has no attribute 'no_such_name'"


def test_a_decode_worker_imports_neither_torch_nor_ray_data():
    """Ray Data's decode tasks unpickle `decode.decode_videos` by importing its module: each decode
    worker of a cluster would otherwise load torch (~1.5 s of CPU and ~300 MB on start)."""
    code = ("import sys, pipeline.infer.decode as d, pipeline.infer as p\n"
            "assert p.decode_videos is d.decode_videos\n"
            "print(sorted(m for m in ('torch', 'ray.data', 'ray') if m in sys.modules))")
    assert _run(code) == "[]"
