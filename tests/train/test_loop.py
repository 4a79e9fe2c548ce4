"""The worker's optimizer step (pipeline.train.loop.train_step), outside Ray Train."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import from_dict
from pipeline.model.forward import to_model_input
from pipeline.train.build import build_model, build_optimizer
from pipeline.train.config import ModelSection, TrainJobConfig
from pipeline.train.loop import train_step
from pipeline.train.losses import mixup, sample_mixup, soft_cross_entropy, soft_targets
from pipeline.train.schedule import make_plan


def test_train_step_accumulates_mixup_of_normalised_clips():
    """Two micro-batches, label smoothing and mixup: the step equals the same arithmetic written
    out (mixup mixes the normalised float clips; the loss is averaged over the micro-batches)."""
    cfg = from_dict(TrainJobConfig, {
        "loop": {"batch_size": 2}, "scale": {"num_workers": 1},
        "optim": {"name": "sgd", "effective_batch": 4, "mixup_alpha": 0.4, "label_smoothing": 0.1}})
    plan = make_plan(cfg, 8, ["a", "b", "c"])
    assert plan.accum == 2
    gen = torch.Generator().manual_seed(0)
    batches = [{"frames": torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8, generator=gen),
                "label": torch.tensor([i, 2 - i])} for i in range(2)]

    def fresh():
        torch.manual_seed(0)
        model = build_model(ModelSection("debug", {"num_frames": 4, "image_size": 32}), plan.num_classes)
        return model, build_optimizer(model, cfg.optim, plan.base_lr)

    model, opt = fresh()
    out = train_step(model, opt, iter(batches), cfg=cfg, plan=plan, device=torch.device("cpu"),
                     np_rng=np.random.default_rng(7), lr=0.05)

    ref, ref_opt = fresh()
    rng = np.random.default_rng(7)
    loss_sum = 0.0
    for batch in batches:
        x = to_model_input(batch["frames"], ref.config.mean, ref.config.std)
        targets = soft_targets(batch["label"], 3, 0.1)
        x, targets = mixup(x, targets, *sample_mixup(0.4, 2, rng))
        loss = soft_cross_entropy(ref(x), targets)
        (loss / 2).backward()
        loss_sum += float(loss.detach()) * 2
    for group in ref_opt.param_groups:
        group["lr"] = 0.05
    ref_opt.step()

    assert out["clips"] == 4 and out["loss_sum"] == pytest.approx(loss_sum, rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_train_step_returns_none_when_the_stream_runs_out():
    cfg = from_dict(TrainJobConfig, {"loop": {"batch_size": 2}, "scale": {"num_workers": 1},
                                     "optim": {"effective_batch": 4}})
    plan = make_plan(cfg, 8, ["a", "b"])
    model = build_model(ModelSection("debug", {"num_frames": 4, "image_size": 32}), plan.num_classes)
    opt = build_optimizer(model, cfg.optim, plan.base_lr)
    one = [{"frames": torch.zeros(2, 4, 32, 32, 3, dtype=torch.uint8), "label": torch.tensor([0, 1])}]
    before = [p.clone() for p in model.parameters()]
    assert train_step(model, opt, iter(one), cfg=cfg, plan=plan, device=torch.device("cpu"),
                      np_rng=np.random.default_rng(0), lr=0.1) is None
    assert all(torch.equal(p, b) and p.grad is None for p, b in zip(model.parameters(), before))


def test_train_batches_from_ray_data_carry_the_decode_work_into_the_step(ray_local, tmp_path):
    """The train stream as the workers read it (the driver's columns, the loop's dtypes): each
    step returns the frames its clips decoded and kept."""
    from pipeline.data import synthetic
    from pipeline.data.dataset import build_clip_dataset
    from pipeline.data.rows import WORK_COLUMNS, DecodeConfig
    from pipeline.train.loop import BATCH_DTYPES

    path = str(tmp_path / "v.mp4")
    synthetic.write_motion_video(path, 0, seconds=2.0)  # 60 frames, 64 x 48
    rows = [{"path": path, "label": i % 2, "video_id": f"v{i}", "start_sec": None, "end_sec": None} for i in range(4)]
    data = DecodeConfig(num_frames=4, sampling_rate=4, crop_size=32, train_short_side=(32, 40), batch_size=2,
                      clips_per_video=2, memory=0)
    ds = build_clip_dataset(rows, data, mode="train", seed=0).select_columns(["frames", "label", *WORK_COLUMNS])
    batches = ds.iter_torch_batches(batch_size=4, dtypes=BATCH_DTYPES, drop_last=True)
    cfg = from_dict(TrainJobConfig, {"loop": {"batch_size": 4}, "scale": {"num_workers": 1},
                                     "optim": {"effective_batch": 8}})
    plan = make_plan(cfg, 8, ["a", "b"])
    model = build_model(ModelSection("debug", {"num_frames": 4, "image_size": 32}), plan.num_classes)
    out = train_step(model, build_optimizer(model, cfg.optim, plan.base_lr), iter(batches), cfg=cfg, plan=plan,
                     device=torch.device("cpu"), np_rng=np.random.default_rng(0), lr=0.1)
    assert out["clips"] == 8  # 4 videos x clips_per_video 2
    assert out["kept_frames"] >= 8 and out["decoded_frames"] >= out["kept_frames"]


def test_the_step_reads_nothing_back_from_the_device_and_the_window_reads_once_at_the_log(monkeypatch):
    """Loss and accuracy stay tensors through the step and the window's sums; the log reads
    them once and prints the same figures as the arithmetic on floats."""
    from pipeline.train.metrics import Window

    cfg = from_dict(TrainJobConfig, {"loop": {"batch_size": 2}, "scale": {"num_workers": 1},
                                     "optim": {"name": "sgd", "effective_batch": 4, "grad_clip": 1.0,
                                               "label_smoothing": 0.1}})
    plan = make_plan(cfg, 16, ["a", "b", "c"])
    torch.manual_seed(0)
    model = build_model(ModelSection("debug", {"num_frames": 4, "image_size": 32}), plan.num_classes)
    opt = build_optimizer(model, cfg.optim, plan.base_lr)
    gen = torch.Generator().manual_seed(1)
    batches = [{"frames": torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8, generator=gen),
                "label": torch.tensor([i % 3, (i + 1) % 3])} for i in range(6)]
    reads = []

    def host_read(name):
        def read(self, *a, **k):
            reads.append(name)
            raise AssertionError(f"Tensor.{name}: a host read in the step")
        return read

    window, outs = Window(), []
    with monkeypatch.context() as m:
        for name in ("item", "__float__", "__bool__", "tolist", "numpy"):
            m.setattr(torch.Tensor, name, host_read(name))
        it = iter(batches)
        for _ in range(3):
            out = train_step(model, opt, it, cfg=cfg, plan=plan, device=torch.device("cpu"),
                             np_rng=np.random.default_rng(0), lr=0.05)
            assert isinstance(out["loss_sum"], torch.Tensor) and isinstance(out["correct"], torch.Tensor)
            window.add(out, 1.0)
            outs.append(out)
    assert reads == []
    record = window.metrics(step=3, steps_per_epoch=4, lr=0.05, world=1, device=torch.device("cpu"))
    loss = sum(float(o["loss_sum"]) for o in outs) / 12
    acc = sum(float(o["correct"]) for o in outs) / 12
    assert record["loss"] == pytest.approx(loss) and record["acc"] == pytest.approx(acc)
    assert isinstance(record["loss"], float) and isinstance(record["acc"], float)
