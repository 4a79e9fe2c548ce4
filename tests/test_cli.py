"""The one job CLI: flags generated from the config dataclass, their precedence, and --help."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, make_dataclass

import pytest

from pipeline.cli import job_parser, parse_config
from pipeline.config import ConfigError


@dataclass
class Optim:
    lr: float = 0.1  # peak learning rate
    nesterov: bool = True


@dataclass
class Job:
    """A job config for the tests."""

    output: str = ""  # where outputs go (required)
    frames: int | None = None  # frames per clip (None: the model's)
    optim: Optim = field(default_factory=Optim)


def _parse(argv, tmp_path=None):
    return parse_config(Job, job_parser(Job, prog="job", doc="A job.\n\nMore text."), argv)[0]


def test_defaults_then_yaml_then_flags_then_set(tmp_path):
    assert _parse([]) == Job()
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("frames: 4\noptim:\n  lr: 0.5\n")
    assert _parse(["--config", str(yaml_file)]).optim.lr == 0.5
    cfg = _parse(["--config", str(yaml_file), "--optim.lr", "0.2", "--frames", "null"])
    assert (cfg.optim.lr, cfg.frames) == (0.2, None)
    cfg = _parse(["--optim.lr", "0.2", "--set", "optim.lr=0.3", "--no-optim.nesterov"])
    assert (cfg.optim.lr, cfg.optim.nesterov) == (0.3, False)


def test_string_fields_take_the_text_as_given():
    assert _parse(["--output", "yes"]).output == "yes"  # not YAML's True
    assert _parse(["--output", "s3://b/out: x"]).output == "s3://b/out: x"


def test_bad_values_and_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="frames"):
        _parse(["--frames", "many"])
    with pytest.raises(ConfigError, match="unknown config key optim.momentum"):
        _parse(["--set", "optim.momentum=0.9"])
    with pytest.raises(ConfigError, match="--config"):
        _parse(["--config", str(tmp_path / "absent.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        _parse(["--config", str(bad)])


def test_unknown_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        _parse(["--nosuch", "1"])
    assert e.value.code == 2 and "--nosuch" in capsys.readouterr().err


def test_help_shows_field_comments_and_defaults():
    text = job_parser(Job, prog="job", doc="A job.\n\nMore text.").format_help()
    assert "--optim.lr LR" in text and "peak learning rate [float; default: 0.1]" in text
    assert "--optim.nesterov, --no-optim.nesterov" in text
    assert "More text." in text


Generated = make_dataclass("Generated", [("k", int, field(default=2, metadata={"help": "clips per video"}))])


@dataclass
class FromGenerated(Generated):
    extra: int = 0  # from the source


@dataclass
class WithGenerated:
    sec: FromGenerated = field(default_factory=FromGenerated)


def test_help_of_a_generated_class_comes_from_its_field_metadata():
    from pipeline.cli import field_comments

    assert field_comments(FromGenerated) == {"k": "clips per video", "extra": "from the source"}
    text = job_parser(WithGenerated, prog="job", doc="A job.").format_help()
    assert "--sec.k K" in text and "clips per video [int; default: 2]" in text


@pytest.mark.parametrize("job", ["jobs.train", "jobs.infer", "jobs.preprocess", "jobs.make_synthetic",
                                 "jobs.convert", "jobs.demo"])
def test_every_job_shows_its_defaults_and_examples(job, capsys):
    with pytest.raises(SystemExit) as e:
        importlib.import_module(job).main(["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0
    assert "--config FILE.yaml" in text and "--set KEY=VALUE" in text
    assert "default:" in text and "examples:" in text and f"python -m {job}" in text


def test_required_fields_are_named_when_missing():
    from pipeline.cli import parse_job

    with pytest.raises(ConfigError, match="--output: missing"):
        parse_job(Job, [], prog="job", doc="A job.", required=("output",))
    assert parse_job(Job, ["--output", "o"], prog="job", doc="A job.", required=("output",))[0].output == "o"


@pytest.mark.parametrize("job", ["jobs.infer", "jobs.preprocess", "jobs.convert", "jobs.make_synthetic"])
def test_jobs_without_their_required_flags_exit_2_in_one_line(job, capsys):
    assert importlib.import_module(job).main([]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing" in err and "\n" not in err and "Traceback" not in err


@dataclass
class Checked:
    """A job whose own checks speak of its fields."""

    clips: int = 1  # clips per video
    crop_size: int = 32
    short_side: int = 32
    optim: Optim = field(default_factory=Optim)

    def __post_init__(self) -> None:
        if self.clips < 1:
            raise ValueError(f"clips must be >= 1, got {self.clips}")
        if self.short_side < self.crop_size:
            raise ValueError(f"short_side {self.short_side} < crop_size {self.crop_size}")


def test_a_dataclass_check_names_the_flags_the_user_typed():
    from pipeline.cli import parse_job

    with pytest.raises(ConfigError) as e:
        parse_job(Checked, ["--clips", "0"], prog="job", doc="A job.")
    assert str(e.value) == "--clips must be >= 1, got 0"  # was "Checked: clips must be >= 1, got 0"
    with pytest.raises(ConfigError) as e:
        parse_job(Checked, ["--set", "short_side=16"], prog="job", doc="A job.")
    assert str(e.value) == "--short-side 16 < --crop-size 32"


@pytest.mark.parametrize("job, argv, text", [
    ("jobs.infer", ["--checkpoint", "c.pt", "--videos", "v.csv", "--output", "o", "--clip.clips", "0"],
     "--clip.clips must be >= 1"),
    ("jobs.infer", ["--checkpoint", "c.pt", "--videos", "v.csv", "--output", "o", "--set", "clip.crops=2"],
     "--clip.crops must be 1 or 3"),
    ("jobs.explain", ["--checkpoint", "c.pt", "--videos", "v.csv", "--output", "o", "--clips", "0"],
     "--clips must be >= 1"),
    ("jobs.transcode", ["--manifest", "m.csv", "--output", "o", "--gop", "0"], "--gop must be >= 1"),
    ("jobs.train", ["--set", "train_manifest=t.csv", "--set", "val_manifest=v.csv", "--data.crops", "2"],
     "--data.crops must be 1 or 3"),
    ("jobs.preprocess", ["--manifest", "m.csv", "--output", "o", "--crops", "2"], "--crops must be 1 or 3"),
    ("jobs.preprocess", ["--manifest", "m.csv", "--output", "o", "--short-side", "16", "--crop-size", "32"],
     "--crop-size <= min"),
])
def test_every_job_names_the_flag_a_check_refuses(user_error, job, argv, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths that do not exist: the check comes first
    err = user_error(importlib.import_module(job).main, argv, text)
    assert "Config:" not in err and "_" not in err.split(" must ")[0]


def test_convert_exits_2_when_the_input_is_missing(user_error, tmp_path):
    from jobs import convert

    user_error(convert.main, ["--source", "official", "--input", tmp_path / "none.pyth",
                              "--output", tmp_path / "m.pt"], f"--input {tmp_path / 'none.pyth'}: not found")


def test_a_manifest_without_a_path_column_lists_the_columns_it_has(user_error, tmp_path):
    from jobs import preprocess

    man = tmp_path / "m.csv"
    man.write_text("file,label\na.mp4,up\n")
    user_error(preprocess.main, ["--manifest", man, "--output", tmp_path / "out"],
               "missing path (columns found: file, label)")
