"""Fixtures of the inference tests: checkpoints (random and trained) and real PyAV-encoded videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from infer_cases import CLIP, FPS, LONG_PLANS, SEGMENT_SECONDS, SIZE

from pipeline.data import synthetic
from pipeline.data.manifest import LabelMap, write_labels
from pipeline.data.clips import ClipConfig
from pipeline.infer import read_video


def _save_with_labels(model, folder: Path) -> str:
    from pipeline.model import save

    folder.mkdir(parents=True, exist_ok=True)
    save(model, str(folder / "model.pt"))
    write_labels(str(folder / "labels.json"), LabelMap(tuple(synthetic.CLASSES)))
    return str(folder / "model.pt")


@pytest.fixture(scope="session")
def untrained_ckpt(tmp_path_factory) -> str:
    """A random debug TimeSformer (4 classes, 4 frames of 32 px) with labels.json beside it."""
    import torch

    from pipeline.model import create

    torch.manual_seed(0)
    return _save_with_labels(create("debug", num_classes=4), tmp_path_factory.mktemp("untrained"))


@pytest.fixture(scope="session")
def short_videos(tmp_path_factory) -> list[str]:
    """Six 3 s motion videos (plain H.264 MP4)."""
    d = tmp_path_factory.mktemp("short")
    paths = []
    for i in range(6):
        p = str(d / f"clip{i}.mp4")
        synthetic.write_motion_video(p, i % 4, seconds=3, fps=FPS, size=SIZE, seed=i)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def long_videos(tmp_path_factory) -> dict[str, str]:
    """Three >= 60 s synthetic videos made of 15 s segments of known motion: id -> path."""
    d = tmp_path_factory.mktemp("long")
    paths = {}
    for i, (vid, labels) in enumerate(LONG_PLANS.items()):
        paths[vid] = str(d / f"{vid}.mp4")
        synthetic.write_long_video(paths[vid], [synthetic.CLASSES.index(x) for x in labels],
                                   segment_seconds=SEGMENT_SECONDS, fps=FPS, size=SIZE, seed=500 + i)
    return paths


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory) -> str:
    """A debug TimeSformer trained in-process (plain torch loop, ~25 s) on 96 separate short
    motion videos (6 clips each), with the from-scratch init of configs/debug.yaml. It never sees
    the long videos; measured on them: 87-100 % of the clips inside a segment right."""
    import torch
    import torch.nn.functional as F

    from pipeline.model.forward import to_model_input
    from pipeline.model import create

    d = tmp_path_factory.mktemp("train_videos")
    xs, ys = [], []
    for i in range(96):
        path = str(d / f"train{i}.mp4")
        synthetic.write_motion_video(path, i % 4, seconds=3, fps=FPS, size=SIZE, seed=1000 + i)
        _, clips = read_video({"uri": path}, ClipConfig(sampling="uniform", clips=6, crops=1, **CLIP))
        xs += list(clips[:, 0])
        ys += [i % 4] * len(clips)
    x_all, y_all = torch.from_numpy(np.stack(xs)), torch.tensor(ys)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = create("debug", num_classes=4, linear_init_std=0.1, time_embed_init_std=1.0, temporal_fc_init_std=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(600):
        idx = torch.randint(0, len(x_all), (16,), generator=g)
        loss = F.cross_entropy(model(to_model_input(x_all[idx])), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return _save_with_labels(model, tmp_path_factory.mktemp("trained"))

