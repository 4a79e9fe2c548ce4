"""uint8 clips -> logits: normalisation layout and the one forward entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.model import create
from pipeline.model.forward import autocast, clip_logits, forward_logits, model_input, to_model_input


def _frame_index_clip(t: int, h: int, w: int) -> np.ndarray:
    """[T, H, W, 3] whose blue channel holds the frame index (R = G = 0)."""
    return np.broadcast_to(np.arange(t, dtype=np.uint8)[:, None, None, None] * np.array([0, 0, 1], np.uint8),
                           (t, h, w, 3)).copy()


def test_to_model_input_layout_and_normalisation():
    frames = torch.from_numpy(np.stack([_frame_index_clip(4, 8, 10)] * 2))  # [B, T, H, W, 3]
    x = to_model_input(frames)
    assert x.shape == (2, 3, 4, 8, 10) and x.dtype == torch.float32
    # channel 2 (B) holds the frame index t: (t / 255 - 0.45) / 0.225
    expected = (torch.arange(4, dtype=torch.float32) / 255 - 0.45) / 0.225
    torch.testing.assert_close(x[0, 2, :, 3, 5], expected)
    assert to_model_input(frames, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError):
        to_model_input(frames.float())


def test_clip_logits_equals_the_model_on_normalised_input():
    torch.manual_seed(0)
    model = create("debug", num_classes=3, num_frames=4, image_size=32).eval()
    frames = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        want = model(to_model_input(frames, model.config.mean, model.config.std))
        got = clip_logits(model, frames)
        wrapped = clip_logits(_Wrap(model), frames)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(wrapped, want)


class _Wrap(torch.nn.Module):
    """A DDP-like wrapper: the real model under `.module`."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def test_autocast_is_fp32_on_cpu_and_rejects_unknown_precision():
    with autocast(torch.device("cpu"), "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast(torch.device("cpu"), "fp8")


def test_model_input_then_forward_logits_is_clip_logits():
    """The two halves training uses (mixup goes between them) compose to the one entry."""
    torch.manual_seed(0)
    model = create("debug", num_classes=3, num_frames=4, image_size=32).eval()
    frames = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    x = model_input(_Wrap(model), frames)
    torch.testing.assert_close(x, to_model_input(frames, model.config.mean, model.config.std))
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(model, x), clip_logits(model, frames))
        # a transformed input reaches the model as given
        torch.testing.assert_close(forward_logits(model, x.flip(0)), clip_logits(model, frames.flip(0)))
