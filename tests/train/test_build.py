"""Model and optimizer of a run (pipeline.train.build)."""

from __future__ import annotations

from pipeline.train.build import build_model, build_optimizer
from pipeline.train.config import ModelSection, OptimSection


def test_optimizer_skips_weight_decay_on_norms_biases_and_embeddings():
    model = build_model(ModelSection("debug", {"num_frames": 4}), num_classes=4)
    opt = build_optimizer(model, OptimSection(name="sgd", weight_decay=1e-4), lr=0.1)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} >= {"cls_token", "pos_embed", "time_embed", "norm.weight"}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert build_model(ModelSection("debug", {"num_frames": 4}), num_classes=7).head.out_features == 7
