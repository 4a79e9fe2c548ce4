"""Awkward inputs users bring, written with PyAV for job-level tests: each must become an error row
with its reason (or, for a cut download, a flagged prediction), and the job must still exit 0."""

from __future__ import annotations

from pathlib import Path

import importlib.util

import numpy as np


def _root_conftest():
    """tests/conftest.py (its video writers) whichever `conftest` a test folder imports first."""
    spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_videos = _root_conftest()
patch_mdhd_timescale, write_coded_video = _videos.patch_mdhd_timescale, _videos.write_coded_video

# name -> the words its error row's reason must hold (None: no error, the video is usable)
EXPECTED = {
    "renamed_png": "still image",
    "zero_timescale": "frame rate",
    "absurd_fps": "fps",
    "too_many_pixels": "max_pixels",
    "truncated": None,
    "good": None,
}
MAX_PIXELS = 128 * 96  # the cap the jobs run with: too_many_pixels is 160x120


def write_bad_inputs(root: Path) -> dict[str, str]:
    """name -> path of each case in `EXPECTED`, under `root`."""
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    out = {"good": write_coded_video(root / "good.mp4", codec="libx264", fmt="mp4", num_frames=60, size=(64, 48))}
    png = root / "picture.png"
    cv2.imwrite(str(png), np.zeros((48, 64, 3), np.uint8))
    (root / "renamed_png.mp4").write_bytes(png.read_bytes())
    out["renamed_png"] = str(root / "renamed_png.mp4")
    out["zero_timescale"] = patch_mdhd_timescale(out["good"], root / "zero_timescale.mp4", 0)
    out["absurd_fps"] = write_coded_video(root / "absurd_fps.mkv", codec="ffv1", fmt="matroska",
                                          pix_fmt="bgr0", num_frames=5, fps=5000, time_base=100000)
    out["too_many_pixels"] = write_coded_video(root / "too_many_pixels.mp4", codec="libx264", fmt="mp4",
                                               num_frames=20, size=(160, 120))
    full = write_coded_video(root / "full.mkv", codec="libx264", fmt="matroska", num_frames=120, size=(64, 48))
    data = open(full, "rb").read()
    (root / "truncated.mkv").write_bytes(data[: len(data) * 45 // 100 + 7])  # a cut download
    out["truncated"] = str(root / "truncated.mkv")
    return out


def manifest(root: Path, videos: dict[str, str]) -> str:
    """A CSV manifest of the cases (label = the case name's first letter class, any is fine)."""
    lines = ["path,label,video_id"] + [f"{p},x,{name}" for name, p in videos.items()]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return str(root / "manifest.csv")


