"""Stochastic depth in the divided block: per video (ours) or per frame / position (official)."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from pipeline.model import create
from pipeline.model import timesformer as tsf


def _block_deltas(per_frame: bool, branch: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One training-mode divided block (p = 0.5) with only `branch` ("spatial" / "temporal")
    writing to the residual stream (the other one and the MLP zeroed): the patch updates
    [B, T, n] (non-zero or not) and the cls updates [B] (non-zero or not)."""
    torch.manual_seed(0)
    model = create("debug", drop_path_rate=0.5, drop_path_per_frame=per_frame)
    blk = model.blocks[1]  # the rate rises to 0.5 at the last block
    blk.train()
    with torch.no_grad():
        blk.mlp.fc2.weight.zero_()
        blk.mlp.fc2.bias.zero_()
        off = blk.attn.proj if branch == "temporal" else blk.temporal_fc
        off.weight.zero_()
        off.bias.zero_()
        if branch == "temporal":
            torch.nn.init.normal_(blk.temporal_fc.weight, std=0.1)
        b, t, n = 16, 4, 16
        cls, patches = torch.randn(b, 1, 64), torch.randn(b, n * t, 64)
        new_cls, new_patches = blk(cls, patches, t, 4, 4)
    moved = rearrange((new_patches - patches).abs().amax(-1) > 0, "b (n t) -> b t n", t=t)
    return moved, (new_cls - cls).abs().amax(-1)[:, 0] > 0


def test_default_drops_whole_videos():
    for branch in ("spatial", "temporal"):
        moved, cls = _block_deltas(False, branch)
        per_video = moved.flatten(1)
        assert (per_video.all(1) | ~per_video.any(1)).all()  # all or nothing in each video
        assert per_video.all(1).any() and (~per_video.any(1)).any()  # both happen at p = 0.5


def test_per_frame_drops_frames_in_the_spatial_step():
    moved, cls = _block_deltas(True, "spatial")  # [B, T, n]
    frames = moved.any(2)
    assert (moved.all(2) == frames).all()  # a frame's patches go together
    assert (frames.any(1) & ~frames.all(1)).any()  # some videos keep some frames, drop others
    assert (cls == frames.any(1)).all()  # cls moves unless every frame's output was dropped


def test_per_frame_drops_positions_in_the_temporal_step():
    moved, _ = _block_deltas(True, "temporal")  # [B, T, n]
    positions = moved.any(1)
    assert (moved.all(1) == positions).all()  # a position's frames go together
    assert (positions.any(1) & ~positions.all(1)).any()


def test_per_frame_needs_divided_attention_and_is_off_in_eval():
    with pytest.raises(ValueError, match="drop_path_per_frame"):
        tsf.TimeSformerConfig(attention="joint", drop_path_per_frame=True)
    a = create("debug", drop_path_rate=0.5, drop_path_per_frame=True).eval()
    b = create("debug", drop_path_rate=0.5).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
