"""InferConfig validation, and its `clip` section resolved against a checkpoint's recipe."""

from __future__ import annotations

import pytest

from pipeline.data.clips import ClipConfig
from pipeline.infer import ClipOverrides, InferConfig, clip_config, plan_inference, resolve_infer
from pipeline.model.recipe import RecipeError, make_recipe

MODEL = {"num_frames": 8, "image_size": 32, "attention": "divided", "mean": [0.45] * 3, "std": [0.225] * 3}


def clip(**given) -> InferConfig:
    """An InferConfig with these clip settings given."""
    return InferConfig(clip=ClipOverrides(**given))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="crops"):
        clip(crops=2)
    with pytest.raises(ValueError, match="aggregate"):
        InferConfig(aggregate="median")
    with pytest.raises(ValueError, match="short_side"):
        clip(short_side=16, crop_size=32)
    with pytest.raises(ValueError, match="sampling_rate"):
        clip(sampling_rate=0)
    with pytest.raises(ValueError, match="clips_per_decode"):
        clip(clips_per_decode=0)


def test_no_clip_flags_give_the_recipe_and_a_differing_flag_is_used_with_a_warning():
    recipe = make_recipe(ClipConfig(num_frames=8, sampling_rate=4, crop_size=32, short_side=36, clips=2),
                         MODEL, labels=["a", "b"])
    res = resolve_infer(clip(sampling=None), "timesformer", MODEL, recipe)  # the recipe's protocol
    assert clip_config(clip(clips_per_decode=3), res.values) == ClipConfig(
        num_frames=8, sampling_rate=4, crop_size=32, short_side=36, sampling="uniform", clips=2, crops=1,
        clips_per_decode=3)
    assert not res.warnings and not res.overrides
    res = resolve_infer(clip(sampling_rate=32, crops=3), "timesformer", MODEL, recipe)
    assert res.values["sampling_rate"] == 32 and res.values["sampling"] == "cover" and res.values["crops"] == 3
    assert res.overrides["sampling_rate"] == {"recipe": 4, "used": 32}
    assert sorted(res.overrides) == ["crops", "sampling_rate"]  # how a video is covered is the job's choice
    assert any(w.startswith("--clip.sampling-rate 32 (given) differs from the checkpoint's recipe (4)") for w in res.warnings)


def _saved(recipe, tmp_path) -> str:
    from pipeline.model import create, save

    path = str(tmp_path / "model.pt")
    save(create("debug", num_frames=8), path, recipe=recipe)
    return path


def test_a_frame_count_the_model_cannot_take_needs_allow_resample(tmp_path):
    recipe = make_recipe(ClipConfig(num_frames=8, crop_size=32), MODEL)
    with pytest.raises(RecipeError, match="--clip.num-frames 16: the model takes 8 frames .*--allow-resample"):
        resolve_infer(clip(num_frames=16), "timesformer", MODEL, recipe)
    with pytest.raises(RecipeError, match="short_side 16 < crop_size 32"):
        plan_inference(_saved(recipe, tmp_path), clip(short_side=16))
    res = resolve_infer(InferConfig(clip=ClipOverrides(num_frames=16), allow_resample=True), "timesformer", MODEL, recipe)
    assert res.values["num_frames"] == 16 and any("resampled to 16" in w for w in res.warnings)
    # a space-only TimeSformer has no time embedding: any frame count, only the recipe warning
    space = {**MODEL, "attention": "space_only"}
    assert resolve_infer(clip(num_frames=16), "timesformer", space, recipe).values["num_frames"] == 16
    with pytest.raises(RecipeError):
        resolve_infer(clip(num_frames=4), "vivit", {**MODEL, "num_frames": 8}, recipe)


def test_long_videos_are_covered_by_default_and_uniform_k_clips_is_the_opt_in():
    recipe = make_recipe(ClipConfig(num_frames=8, sampling_rate=4, crop_size=32, clips=1), MODEL)  # uniform, 1 clip
    res = resolve_infer(InferConfig(), "timesformer", MODEL, recipe)
    assert (res.values["sampling"], res.values["clips"]) == ("cover", 1) and not res.warnings
    res = resolve_infer(clip(sampling="uniform", clips=4), "timesformer", MODEL, recipe)
    assert (res.values["sampling"], res.values["clips"]) == ("uniform", 4) and not res.warnings


def test_a_crop_flag_moves_the_short_side_when_the_recipe_resizes_to_its_crop():
    recipe = make_recipe(ClipConfig(num_frames=8, crop_size=32), MODEL)
    values = resolve_infer(clip(crop_size=40), "timesformer", MODEL, recipe).values
    assert (values["crop_size"], values["short_side"]) == (40, 40)


def test_an_old_checkpoint_gets_the_documented_defaults_with_a_warning(tmp_path):
    from pipeline.model import create, save

    path = str(tmp_path / "old.pt")
    save(create("debug", num_frames=8), path)  # no recipe in meta
    plan = plan_inference(path, InferConfig())
    assert plan.resolved.values == {"num_frames": 8, "sampling_rate": 32, "crop_size": 32, "short_side": 32,
                                    "sampling": "cover", "clips": 1, "crops": 1}
    assert len(plan.warnings) == 1 and "records no clip recipe" in plan.warnings[0]


def test_a_missing_or_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        plan_inference(str(tmp_path / "nope.pt"), InferConfig())
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable checkpoint") as e:
        plan_inference(str(tmp_path / "bad.pt"), InferConfig())
    assert "\n" not in str(e.value)


def test_compile_is_opt_in_by_flag():
    from jobs.infer import InferJobConfig
    from pipeline.cli import parse_job

    assert InferConfig().compile is False
    cfg, _ = parse_job(InferJobConfig, ["--compile"], prog="infer", doc="")
    assert cfg.infer_config().compile is True


def _job(argv):
    """The InferConfig of a `jobs.infer` command line."""
    from jobs.infer import InferJobConfig
    from pipeline.cli import parse_job

    return parse_job(InferJobConfig, argv, prog="infer", doc="")[0].infer_config()


def test_a_clip_flag_overrides_the_recipe_and_one_left_out_comes_from_it():
    recipe = make_recipe(ClipConfig(num_frames=8, sampling_rate=4, crop_size=32, short_side=36, clips=2), MODEL)
    cfg = _job(["--clip.sampling-rate", "16", "--set", "clip.crops=3"])
    res = resolve_infer(cfg, "timesformer", MODEL, recipe)
    assert (res.values["sampling_rate"], res.values["crops"]) == (16, 3)  # given
    assert (res.values["num_frames"], res.values["crop_size"], res.values["short_side"]) == (8, 32, 36)  # the recipe's
    assert (res.values["sampling"], res.values["clips"]) == ("cover", 1)  # another clip key given: still cover
    assert "--clip.sampling-rate 16 (given) differs from the checkpoint's recipe (4); using 16" in res.warnings
    recipes_protocol = resolve_infer(_job(["--clip.sampling", "null"]), "timesformer", MODEL, recipe).values
    assert (recipes_protocol["sampling"], recipes_protocol["clips"]) == ("uniform", 2)
    assert clip_config(_job(["--clip.clips-per-decode", "2"]), res.values).clips_per_decode == 2
    assert clip_config(_job([]), res.values).max_pixels == ClipConfig().max_pixels  # ClipConfig's default


def test_a_clip_section_in_a_config_file_keeps_the_other_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("clip:\n  num_frames: 16\n")
    cfg = _job(["--config", str(tmp_path / "c.yaml")])
    assert cfg.clip == ClipOverrides(num_frames=16) and cfg.clip.sampling == "cover"


def test_help_shows_every_clip_flag_with_its_help_and_default(capsys):
    from jobs.infer import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help lines
    assert "--clip.num-frames NUM_FRAMES frames per clip (None: the checkpoint's recipe) [int | None; default: None]" in text
    assert "--clip.crop-size CROP_SIZE square crop side (None: the recipe's) [int | None; default: None]" in text
    assert "(None: the recipe's eval protocol) [uniform|cover | None; default: 'cover']" in text
    assert "--clip.clips-per-decode CLIPS_PER_DECODE clips decoded per seek pass" in text
    assert "None: no cap [int | None; default: 9437184]" in text  # max_pixels: None is ClipConfig's own "no cap"
    for flag in ("sampling-rate", "short-side", "sampling", "clips", "crops", "max-pixels", "storage-attempts",
                 "storage-backoff-s"):
        assert f"--clip.{flag} " in text
    assert "--num-frames" not in text and "--crops " not in text
