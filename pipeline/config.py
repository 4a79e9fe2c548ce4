"""Typed configuration: nested dataclasses hold every default, YAML files hold overrides.

    cfg = load_config(TrainJobConfig, "configs/debug.yaml", ["optim.lr=0.01", "data.num_frames=4"])

- `from_dict(cls, mapping)` builds a dataclass strictly: an unknown key is a `ConfigError` naming
  the full dotted key and the keys that are allowed; a value of the wrong type is an error too.
- `apply_overrides(mapping, ["a.b=c", ...])` sets dotted keys; values are parsed as YAML scalars
  (`4` -> int, `0.1` -> float, `true` -> bool, `null` -> None, `[1, 2]` -> list).
- Sections are plain dataclasses defined next to the code that uses them, so each function is
  handed only its own section (`train_func(cfg.optim, ...)`), never the whole tree.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not match the dataclass schema."""


class FieldError(ConfigError):
    """A dataclass's own check (`__post_init__`) refused its values; `text` speaks of its fields
    by their names (`clips must be >= 1, got 0`). `render(name_of)` names each field as the
    caller's user knows it: the dotted config key (`str()`), or a flag (`pipeline.cli`)."""

    def __init__(self, owner: str, prefix: str, text: str, names: list[str]) -> None:
        self.owner, self.prefix, self.text, self.names = owner, prefix, text, names
        super().__init__(self.render(lambda key: key))

    def render(self, name_of: Any) -> str:
        """`text` with each field's name, wherever it stands as a word, as `name_of(dotted key)`;
        prefixed with the section (or class) when it names none."""
        found = False

        def sub(m: re.Match) -> str:
            nonlocal found
            found = True
            return name_of(self.prefix + m.group(0))

        words = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        text = re.sub(rf"(?<![\w.-])(?:{words})(?![\w-])", sub, self.text) if words else self.text
        where = self.prefix.rstrip(".") or self.owner
        return text if found or not where else f"{where}: {self.text}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{key}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        item = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys and wrong types raise `ConfigError`."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(prefix + k for k in unknown)} (allowed in {prefix or 'top level'}: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from e
    except ValueError as e:
        raise FieldError(cls.__name__, prefix, str(e), list(fields)) from e
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """The dataclass as plain dicts/lists (YAML/JSON-safe)."""
    return dataclasses.asdict(obj)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b.c=value` applied (value parsed as YAML)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key part")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {p} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    text = Path(path).read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults from `cls`, then the YAML file at `path`, then `--set` overrides."""
    data = apply_overrides(load_yaml(path), overrides or [])
    return from_dict(cls, data)
