"""Clip transforms on uint8 numpy `[T, H, W, 3]` (no Ray, no torch).

Spatial ops run on uint8 with OpenCV (INTER_LINEAR, one thread), 5-10x faster than float resizing
in torch on CPU (docs/DATA.md). Normalisation happens on the model's device
(`pipeline.model.forward.to_model_input`).
"""

from __future__ import annotations


import cv2
import numpy as np

cv2.setNumThreads(1)


def _short_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(new_h, new_w) with the short side == size, aspect kept (rounded, >= 1)."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if h <= w:
        return size, max(1, round(w * size / h))
    return max(1, round(h * size / w)), size


def short_side_resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize one uint8 [H, W, 3] frame so its short side equals `size` (INTER_LINEAR)."""
    h, w = frame.shape[:2]
    nh, nw = _short_side_shape(h, w, size)
    if (nh, nw) == (h, w):
        return frame
    return cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)


def short_side_resize(clip: np.ndarray, size: int) -> np.ndarray:
    """[T, H, W, 3] -> [T, H', W', 3] with min(H', W') == size."""
    _check_clip(clip)
    return np.stack([short_side_resize_frame(f, size) for f in clip])


def _crop(clip: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
    return clip[:, top:top + size, left:left + size]


def _check_crop(clip: np.ndarray, size: int) -> tuple[int, int]:
    _check_clip(clip)
    h, w = clip.shape[1:3]
    if size > h or size > w:
        raise ValueError(f"crop {size} larger than frames {h}x{w}")
    return h, w


def random_crop(clip: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random size x size crop (same window for all frames)."""
    h, w = _check_crop(clip, size)
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return _crop(clip, size, top, left)


def center_crop(clip: np.ndarray, size: int) -> np.ndarray:
    """The centre size x size crop."""
    h, w = _check_crop(clip, size)
    return _crop(clip, size, (h - size) // 2, (w - size) // 2)


def three_crops(clip: np.ndarray, size: int) -> list[np.ndarray]:
    """Three size x size crops along the long side: left/centre/right (landscape) or
    top/centre/bottom (portrait), as in the official test protocol."""
    h, w = _check_crop(clip, size)
    if w >= h:
        top = (h - size) // 2
        return [_crop(clip, size, top, left) for left in (0, (w - size) // 2, w - size)]
    left = (w - size) // 2
    return [_crop(clip, size, top, left) for top in (0, (h - size) // 2, h - size)]


def hflip(clip: np.ndarray) -> np.ndarray:
    """Mirror left-right into a new contiguous clip (OpenCV per frame: ~20x numpy's reversed copy)."""
    _check_clip(clip)
    out = np.empty(clip.shape, dtype=clip.dtype)
    for src, dst in zip(clip, out):
        cv2.flip(src, 1, dst=dst)
    return out


def _check_clip(clip: np.ndarray) -> None:
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a clip [T, H, W, 3], got shape {clip.shape}")
