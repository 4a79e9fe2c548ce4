"""jobs.convert: official / timm weights -> our checkpoint + summary.json, strict failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from einops import rearrange
from hf_oracles import hf_timesformer, hf_vit, randomize

import pipeline.model as pm
from jobs.convert import main
from pipeline import storage
from pipeline.model.weights import hf_vit_to_timm

ROOT = Path(__file__).resolve().parents[2]


def test_official_checkpoint_converts_to_a_loadable_model(tmp_path):
    source = randomize(pm.create("debug")).eval()
    src = tmp_path / "official.pyth"
    torch.save({"model_state": {"model." + k: v for k, v in source.state_dict().items()}, "epoch": 15}, src)
    (tmp_path / "labels_in.json").write_text(json.dumps({"left": 0, "right": 1, "up": 2, "down": 3}))
    out = tmp_path / "out" / "model.pt"
    rc = main(["--source", "official", "--input", str(src), "--preset", "debug", "--output", str(out),
               "--labels", str(tmp_path / "labels_in.json")])
    assert rc == 0
    model = pm.load(str(out))
    x = torch.randn(1, 3, 4, 32, 32)
    torch.testing.assert_close(model(x), source(x))
    summary = json.loads((out.parent / "summary.json").read_text())
    assert summary["report"]["copied"] == len(source.state_dict()) and summary["config"]["attention"] == "divided"
    assert json.loads((out.parent / "labels.json").read_text())["down"] == 3
    assert pm.read_checkpoint(str(out))["meta"]["labels"]["left"] == 0


def test_timm_vit_converts_to_s3_with_a_new_class_count(tmp_path, s3_bucket):
    src = tmp_path / "vit.pt"
    torch.save(hf_vit_to_timm(hf_vit().state_dict()), src)
    out = f"s3://{s3_bucket}/init/model.pt"
    assert main(["--source", "timm", "--input", str(src), "--preset", "debug", "--set", "overrides.num_classes=7",
                 "--set", "overrides.num_frames=8", "--output", out]) == 0
    assert pm.load(out).head.out_features == 7
    report = storage.read_json(f"s3://{s3_bucket}/init/summary.json")["report"]
    assert "time_embed" in report["fresh"] and any(k == "blocks.0.temporal_attn.qkv.weight" for k, _ in report["initialized_from"])


def test_mismatched_weights_exit_1_and_write_nothing(tmp_path, capsys):
    source = pm.create("debug", attention="joint")
    src = tmp_path / "joint.pyth"
    torch.save({"model_state": {"model." + k: v for k, v in source.state_dict().items()}}, src)
    out = tmp_path / "out" / "model.pt"
    assert main(["--source", "official", "--input", str(src), "--preset", "debug", "--output", str(out)]) == 1
    assert "missing" in capsys.readouterr().err and not out.parent.exists()


def test_command_line_entry_point():
    res = subprocess.run([sys.executable, "-m", "jobs.convert", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0 and "--source" in res.stdout


def test_hf_save_pretrained_folder_converts(tmp_path):
    hf = hf_timesformer("divided")
    hf.save_pretrained(tmp_path / "hf")  # config.json + model.safetensors
    out = tmp_path / "model.pt"
    assert main(["--source", "hf", "--input", str(tmp_path / "hf"), "--preset", "debug", "--output", str(out)]) == 0
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=rearrange(x, "b c t h w -> b t c h w")).logits
        torch.testing.assert_close(pm.load(str(out))(x), ref, atol=2e-5, rtol=1e-5)


def test_a_source_the_family_cannot_take_is_an_error(tmp_path, capsys):
    torch.save({}, tmp_path / "x.pyth")  # the input exists: the source is what is wrong
    assert main(["--source", "official", "--input", str(tmp_path / "x.pyth"), "--preset", "vivit_debug",
                 "--output", str(tmp_path / "m.pt")]) == 1
    assert "--source must be one of ['hf', 'ours']" in capsys.readouterr().err


def test_target_shape_flags_resize_and_report(tmp_path):
    source = randomize(pm.create("debug")).eval()  # 4 frames, 32 px, 4 classes
    src = tmp_path / "official.pyth"
    torch.save({"model_state": {"model." + k: v for k, v in source.state_dict().items()}}, src)
    out = tmp_path / "model.pt"
    assert main(["--source", "official", "--input", str(src), "--preset", "debug", "--num-frames", "8",
                 "--image-size", "64", "--num-classes", "6", "--output", str(out)]) == 0
    model = pm.load(str(out))
    assert (model.config.num_frames, model.config.image_size, model.config.num_classes) == (8, 64, 6)
    report = json.loads((tmp_path / "summary.json").read_text())["report"]
    resized = {k: (a, b) for k, a, b in report["resized"]}
    assert resized["time_embed"] == ([1, 4, 64], [1, 8, 64])
    assert resized["pos_embed"] == ([1, 17, 64], [1, 65, 64])
    assert "head.weight" in report["fresh"]
    assert model(torch.randn(1, 3, 8, 64, 64)).shape == (1, 6)


def test_ours_keeps_its_recipe_and_labels_through_a_resize_and_an_old_one_gets_the_defaults(tmp_path):
    from pipeline.model.recipe import checkpoint_recipe, make_recipe

    model = pm.create("debug", num_frames=8)
    recipe = make_recipe({"sampling_rate": 4, "crop_size": 32, "short_side": 36, "crops": 3}, model.config,
                         labels=["a", "b", "c", "d"])
    pm.save(model, str(tmp_path / "in.pt"), recipe=recipe)
    assert main(["--source", "ours", "--input", str(tmp_path / "in.pt"), "--num-frames", "16",
                 "--output", str(tmp_path / "out" / "m.pt")]) == 0
    out, notes = checkpoint_recipe(pm.read_checkpoint(str(tmp_path / "out" / "m.pt")))
    assert not notes and pm.load(str(tmp_path / "out" / "m.pt")).config.num_frames == 16
    assert (out["num_frames"], out["sampling_rate"], out["short_side"], out["crops"], out["labels"]) == (
        16, 4, 36, 3, ["a", "b", "c", "d"])
    pm.save(model, str(tmp_path / "old.pt"))  # no recipe: convert records the defaults
    assert main(["--source", "ours", "--input", str(tmp_path / "old.pt"), "--output", str(tmp_path / "new.pt")]) == 0
    new, notes = checkpoint_recipe(pm.read_checkpoint(str(tmp_path / "new.pt")))
    assert not notes and (new["sampling_rate"], new["sampling"], new["short_side"]) == (32, "uniform", 32)


def test_an_hf_file_without_config_json_needs_a_preset(tmp_path, capsys):
    from safetensors.torch import save_file

    save_file(hf_timesformer("divided").state_dict(), str(tmp_path / "w.safetensors"))
    assert main(["--source", "hf", "--input", str(tmp_path / "w.safetensors"), "--output", str(tmp_path / "m.pt")]) == 1
    assert "no config.json" in capsys.readouterr().err
    assert main(["--source", "hf", "--input", str(tmp_path / "w.safetensors"), "--preset", "debug",
                 "--output", str(tmp_path / "m.pt")]) == 0
