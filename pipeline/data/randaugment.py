"""RandAugment for video (Cubuk et al. 2020, as the ViViT recipe applies it): uint8 clips, no Ray.

    clip = randaugment(clip, n=2, m=9, rng=rng)     # uint8 [T, H, W, 3] -> uint8 [T, H, W, 3]

`n` ops are drawn uniformly (with replacement) from `OPS`, each at magnitude `m` on the paper's
0..10 scale, with a random sign for the signed ones; every frame of the clip gets **the same ops
with the same parameters**, so the augmentation never fakes motion (a per-frame shift or
rotation would). Ops that depend on image statistics (autocontrast, equalize, contrast) take them
over the whole clip and apply one lookup table / one blend to every frame. Each op's strongest
setting (m = 10) follows timm's `rand-m10` scale: rotate 30 deg, shear 0.3, translate 0.45 of the
side, enhance factors 1 +- 0.9, posterize to 4 bits, solarize at 0. Every random draw comes from
the `rng` passed in, so a clip's augmentation is reproducible from the row's seed
(`clips.row_rng`) and different clips get different draws.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

MAX_MAGNITUDE = 10
FILL = 128  # grey for pixels that geometric ops bring in from outside the frame


def _lut(clip: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply per-channel lookup tables `table` [3, 256] (uint8) to every frame."""
    out = np.empty_like(clip)
    for c in range(3):
        out[..., c] = table[c][clip[..., c]]
    return out


def _blend(clip: np.ndarray, degenerate: np.ndarray | float, factor: float) -> np.ndarray:
    """PIL ImageEnhance: degenerate + factor * (clip - degenerate), clipped to uint8."""
    out = degenerate + factor * (clip.astype(np.float32) - degenerate)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _gray(clip: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma [T, H, W, 1] float32 (PIL's "L" conversion)."""
    return (clip.astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))[..., None]


def _affine(clip: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The same 2 x 3 affine warp of every frame (grey fill)."""
    h, w = clip.shape[1:3]
    return np.stack([cv2.warpAffine(f, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=(FILL, FILL, FILL)) for f in clip])


def identity(clip: np.ndarray, level: float) -> np.ndarray:
    return clip


def autocontrast(clip: np.ndarray, level: float) -> np.ndarray:
    """Stretch each channel's clip-wide [min, max] to [0, 255]."""
    table = np.tile(np.arange(256, dtype=np.float32), (3, 1))
    for c in range(3):
        lo, hi = float(clip[..., c].min()), float(clip[..., c].max())
        if hi > lo:
            table[c] = (table[c] - lo) * 255.0 / (hi - lo)
    return _lut(clip, np.clip(np.rint(table), 0, 255).astype(np.uint8))


def equalize(clip: np.ndarray, level: float) -> np.ndarray:
    """Histogram-equalise each channel with the histogram of the whole clip."""
    table = np.tile(np.arange(256, dtype=np.float32), (3, 1))
    for c in range(3):
        cdf = np.bincount(clip[..., c].ravel(), minlength=256).cumsum().astype(np.float64)
        lo = cdf[cdf > 0][0]
        if cdf[-1] > lo:
            table[c] = (cdf - lo) * 255.0 / (cdf[-1] - lo)
    return _lut(clip, np.clip(np.rint(table), 0, 255).astype(np.uint8))


def rotate(clip: np.ndarray, level: float) -> np.ndarray:
    h, w = clip.shape[1:3]
    return _affine(clip, cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 30.0 * level, 1.0))


def solarize(clip: np.ndarray, level: float) -> np.ndarray:
    """Invert pixels at or above 256 (m = 0: nothing) down to 0 (m = 10: everything)."""
    threshold = 256 - 256 * abs(level)
    return np.where(clip >= threshold, 255 - clip, clip).astype(np.uint8)


def posterize(clip: np.ndarray, level: float) -> np.ndarray:
    """Keep 8 - 4 |level| bits (8 at m = 0, 4 at m = 10)."""
    bits = 8 - int(round(4 * abs(level)))
    return clip & np.uint8((0xFF << (8 - bits)) & 0xFF)


def color(clip: np.ndarray, level: float) -> np.ndarray:
    return _blend(clip, _gray(clip), 1.0 + 0.9 * level)


def contrast(clip: np.ndarray, level: float) -> np.ndarray:
    return _blend(clip, float(_gray(clip).mean()), 1.0 + 0.9 * level)


def brightness(clip: np.ndarray, level: float) -> np.ndarray:
    return _blend(clip, 0.0, 1.0 + 0.9 * level)


def sharpness(clip: np.ndarray, level: float) -> np.ndarray:
    """Blend with PIL's SMOOTH-filtered frames (the border pixels stay as they are)."""
    kernel = np.float32([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13.0
    smooth = np.stack([cv2.filter2D(f, -1, kernel, borderType=cv2.BORDER_REPLICATE) for f in clip])
    smooth[:, [0, -1]], smooth[:, :, [0, -1]] = clip[:, [0, -1]], clip[:, :, [0, -1]]
    return _blend(clip, smooth.astype(np.float32), 1.0 + 0.9 * level)


def shear_x(clip: np.ndarray, level: float) -> np.ndarray:
    return _affine(clip, np.float32([[1, 0.3 * level, 0], [0, 1, 0]]))


def shear_y(clip: np.ndarray, level: float) -> np.ndarray:
    return _affine(clip, np.float32([[1, 0, 0], [0.3 * level, 1, 0]]))


def translate_x(clip: np.ndarray, level: float) -> np.ndarray:
    return _affine(clip, np.float32([[1, 0, 0.45 * level * clip.shape[2]], [0, 1, 0]]))


def translate_y(clip: np.ndarray, level: float) -> np.ndarray:
    return _affine(clip, np.float32([[1, 0, 0], [0, 1, 0.45 * level * clip.shape[1]]]))


# name -> (op, signed): a signed op's level is +-m/10 (sign drawn per clip), the others' m/10
OPS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], bool]] = {
    "identity": (identity, False), "autocontrast": (autocontrast, False), "equalize": (equalize, False),
    "rotate": (rotate, True), "solarize": (solarize, False), "color": (color, True),
    "posterize": (posterize, False), "contrast": (contrast, True), "brightness": (brightness, True),
    "sharpness": (sharpness, True), "shear_x": (shear_x, True), "shear_y": (shear_y, True),
    "translate_x": (translate_x, True), "translate_y": (translate_y, True),
}


def check(n: int, m: float) -> None:
    """ValueError unless 0 <= n and 0 <= m <= MAX_MAGNITUDE."""
    if n < 0:
        raise ValueError(f"randaugment_n must be >= 0, got {n}")
    if not 0 <= m <= MAX_MAGNITUDE:
        raise ValueError(f"randaugment_m must be in [0, {MAX_MAGNITUDE}], got {m}")


def draw(n: int, m: float, rng: np.random.Generator) -> list[tuple[str, float]]:
    """The clip's `n` ops and their signed levels in [-1, 1], drawn from `rng`."""
    check(n, m)
    names = list(OPS)
    ops = []
    for i in rng.integers(0, len(names), size=n):
        name = names[int(i)]
        sign = (1.0 if rng.random() < 0.5 else -1.0) if OPS[name][1] else 1.0
        ops.append((name, sign * m / MAX_MAGNITUDE))
    return ops


def apply(clip: np.ndarray, ops: list[tuple[str, float]]) -> np.ndarray:
    """Apply drawn ops in order to every frame of uint8 `clip` [T, H, W, 3]."""
    if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a uint8 clip [T, H, W, 3], got {clip.dtype} {clip.shape}")
    for name, level in ops:
        clip = OPS[name][0](clip, level)
    return np.ascontiguousarray(clip)


def randaugment(clip: np.ndarray, n: int, m: float, rng: np.random.Generator) -> np.ndarray:
    """`n` random ops at magnitude `m` (0..10), the same for every frame: uint8 [T, H, W, 3] -> same."""
    return apply(clip, draw(n, m, rng))
