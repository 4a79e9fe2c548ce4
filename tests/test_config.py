"""The config layer: dataclass defaults, YAML overrides, --set, and loud errors."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from pipeline.config import ConfigError, apply_overrides, from_dict, load_config, to_dict


@dataclass
class Optim:
    lr: float = 0.005
    name: Literal["sgd", "adamw"] = "sgd"
    milestones: list[int] = field(default_factory=lambda: [11, 14])


@dataclass
class Job:
    optim: Optim = field(default_factory=Optim)
    epochs: int = 15
    init: Optional[str] = None


def test_defaults_come_from_dataclasses():
    cfg = from_dict(Job, {})
    assert cfg.optim.lr == 0.005 and cfg.epochs == 15 and cfg.init is None


def test_yaml_then_set_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 0.1\nepochs: 3\n")
    cfg = load_config(Job, p, ["optim.name=adamw", "epochs=5", "optim.milestones=[1, 2]", "init=x.pt"])
    assert cfg.optim.lr == 0.1 and cfg.optim.name == "adamw"
    assert cfg.epochs == 5 and cfg.optim.milestones == [1, 2] and cfg.init == "x.pt"
    assert to_dict(cfg)["optim"]["lr"] == 0.1


def test_int_is_accepted_for_float():
    assert from_dict(Job, {"optim": {"lr": 1}}).optim.lr == 1.0


@pytest.mark.parametrize(
    "data, message",
    [
        ({"optim": {"lrr": 0.1}}, "unknown config key optim.lrr"),
        ({"epoch": 3}, "unknown config key epoch"),
        ({"epochs": "three"}, "epochs: expected an integer"),
        ({"epochs": True}, "epochs: expected an integer"),
        ({"optim": {"name": "rmsprop"}}, "optim.name: 'rmsprop' is not one of"),
        ({"optim": 3}, "expected a mapping for section Optim"),
        ({"optim": {"milestones": [1, "a"]}}, "optim.milestones[1]"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ConfigError, match=None) as e:
        from_dict(Job, data)
    assert message in str(e.value)


def test_set_needs_key_value():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"epochs": 3}, ["epochs.x=1"])


def test_non_finite_numbers_are_config_errors_everywhere():
    @dataclass
    class Cfg:
        lr: float = 0.1
        clip: float | None = None
        resources: dict[str, float] = field(default_factory=dict)

    assert from_dict(Cfg, {"lr": 1, "clip": None, "resources": {"CPU": 2}}).resources == {"CPU": 2.0}
    for data, key in (({"lr": float("nan")}, "lr"), ({"clip": float("inf")}, "clip"),
                      ({"resources": {"GPU": float("-inf")}}, "resources.GPU")):
        with pytest.raises(ConfigError, match=f"^{key}: must be a finite number"):
            from_dict(Cfg, data)


@dataclass
class Checked:
    """A section whose own check names its fields."""

    batch_size: int = 8
    clips: int = 1

    def __post_init__(self) -> None:
        if self.clips < 1:
            raise ValueError(f"clips must be >= 1, got {self.clips}")
        if self.batch_size < self.clips:
            raise ValueError(f"batch_size {self.batch_size} < clips {self.clips}")


@dataclass
class Outer:
    loop: Checked = field(default_factory=Checked)
    clips: int = 1

    def __post_init__(self) -> None:
        if self.clips < 1:
            raise ValueError("must have a clip")


def test_a_dataclass_check_speaks_of_config_keys_not_of_classes():
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, {"loop": {"clips": 0}})
    assert str(e.value) == "loop.clips must be >= 1, got 0"  # was "loop.: clips must be ..."
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, {"loop": {"batch_size": 2, "clips": 4}})
    assert str(e.value) == "loop.batch_size 2 < loop.clips 4"
    with pytest.raises(ConfigError) as e:  # a message that names no field keeps its class
        from_dict(Outer, {"clips": 0})
    assert str(e.value) == "Outer: must have a clip"
