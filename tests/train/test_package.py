"""The package's public names: all resolve, and only the worker loop and driver load Ray Train."""

from __future__ import annotations

import subprocess
import sys

import pipeline.train


def test_every_public_name_resolves():
    missing = [n for n in pipeline.train.__all__ if getattr(pipeline.train, n, None) is None]
    assert not missing


def test_ray_train_loads_only_with_the_loop_or_driver():
    code = ("import sys, pipeline.train\n"
            "assert 'ray.train' not in sys.modules, 'import pipeline.train loaded ray.train'\n"
            "from pipeline.train import fit\n"
            "assert 'ray.train' in sys.modules and fit.__module__ == 'pipeline.train.driver'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
