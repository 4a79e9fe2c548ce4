"""One way to parse every job: a dataclass config, optional `--config`, `--set`, generated flags.

    parser = job_parser(InferJobConfig, prog="python -m jobs.infer", doc=__doc__)
    cfg = parse_config(InferJobConfig, parser, argv)       # raises ConfigError

Every field of the job's config dataclass becomes a flag with its help and default: a top-level
field `num_frames` is `--num-frames`, a field of a section is `--optim.lr`. The values of flags and
of `--set key=value` are read as YAML scalars (`8`, `0.1`, `true`, `null`, `[256, 320]`) and then
checked against the field's type, exactly like the YAML file. Later sources win:

    dataclass defaults  <  --config FILE.yaml  <  flags  <  --set key=value

A field's help is the comment on its line in the dataclass source (`x: int = 3  # what x is`), so
the documentation of a default lives once, beside the default; a field declared with
`field(metadata={"help": ...})` (a generated class's, `pipeline.data.overrides`) carries its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from typing import Any, Callable, Sequence, TypeVar

import yaml

from pipeline.config import ConfigError, FieldError, apply_overrides, from_dict, load_yaml

T = TypeVar("T")

_COMMENT = re.compile(r"^\s*(\w+)\s*:[^#]*#\s*(.+)$")
_FIELD = re.compile(r"^\s*(\w+)\s*:\s*\S")


def field_comments(cls: type) -> dict[str, str]:
    """`{field: help}` of a dataclass: a field's `metadata["help"]` where it has one (a generated
    class has no source), else from the source: the `# ...` on the field's line, else the
    comment lines right above it."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            lines = []
        above: list[str] = []
        for line in lines:
            text = line.strip()
            if text.startswith("#"):
                above.append(text.lstrip("# ").strip())
                continue
            m = _COMMENT.match(line)
            field_line = _FIELD.match(line)
            if m:
                out[m.group(1)] = m.group(2).strip()
            elif field_line and above:
                out[field_line.group(1)] = " ".join(above)
            above = []
        own = klass.__dict__.get("__annotations__", {})
        out.update({f.name: str(f.metadata["help"]) for f in dataclasses.fields(klass)
                    if f.name in own and "help" in f.metadata})
    return out


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """(dotted key, type, default, help) of every non-section field, sections expanded."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out.extend(_leaves(tp, prefix + f.name + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append((prefix + f.name, tp, default, comments.get(f.name, "")))
    return out


def _type_name(tp: Any) -> str:
    """A short readable name of a field type for --help (`int`, `float | None`, `a|b`)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    text = getattr(tp, "__name__", None) if origin is None else None
    return text or re.sub(r"\b[\w.]+\.(\w+)", r"\1", str(tp))


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _is_bool(tp: Any) -> bool:
    return tp is bool


def job_parser(cls: type, *, prog: str, doc: str, examples: str = "",
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """The parser of a job whose whole configuration is the dataclass `cls`.

    `doc` is the job's module docstring (its first paragraph is the description; the rest,
    with `examples`, is printed after the options). `extra` adds options that are not config.
    """
    head, _, rest = doc.strip().partition("\n\n")
    epilog = "\n\n".join(part for part in (rest.strip(), examples.strip()) if part)
    p = argparse.ArgumentParser(prog=prog, description=head, epilog=epilog or None,
                                usage=f"{prog} [--config FILE.yaml] [--set KEY=VALUE ...] [options]",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file with overrides of the defaults below")
    p.add_argument("--set", dest="_set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, dotted for sections: --set section.key=value (repeatable; wins over flags)")
    if extra is not None:
        extra(p)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, tp, default, help_text in _leaves(cls):
        section = key.rsplit(".", 1)[0] if "." in key else "config"
        if section not in groups:
            groups[section] = p.add_argument_group(f"{section} options" if section != "config" else "job options")
        shown = "required" if default is dataclasses.MISSING else f"default: {default!r}"
        text = f"{help_text} [{_type_name(tp)}; {shown}]" if help_text else f"[{_type_name(tp)}; {shown}]"
        text = text.replace("%", "%%")
        if _is_bool(tp):
            groups[section].add_argument(_flag(key), dest=key, action=argparse.BooleanOptionalAction,
                                         default=argparse.SUPPRESS, help=text)
        else:
            groups[section].add_argument(_flag(key), dest=key, metavar=key.rsplit(".", 1)[-1].upper(),
                                         default=argparse.SUPPRESS, help=text)
    return p


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The config of parsed `args`: defaults < --config < flags < --set (raises ConfigError)."""
    data = load_yaml(args.config) if getattr(args, "config", None) else {}
    for key, tp, _, _ in _leaves(cls):
        if key in vars(args):
            _set_key(data, key, _flag_value(getattr(args, key), tp))
    data = apply_overrides(data, list(getattr(args, "_set", [])))
    return from_dict(cls, data)


def _flag_value(raw: Any, tp: Any) -> Any:
    """A flag's value: booleans as given, text for string fields, else the YAML scalar."""
    if isinstance(raw, bool) or not isinstance(raw, str):
        return raw
    args = typing.get_args(tp)
    if tp is str or (str in args and raw.strip() not in ("null", "~")):
        return raw
    return yaml.safe_load(raw) if raw.strip() else ""


def _set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """`data[a][b] = value` for the dotted `key` "a.b" (sections created as needed)."""
    *sections, leaf = key.split(".")
    node = data
    for name in sections:
        nxt = node.setdefault(name, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{key}: {name} is not a section")
        node = nxt
    node[leaf] = value


def parse_config(cls: type[T], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[T, argparse.Namespace]:
    """Parse `argv` with `parser` (from `job_parser`) -> (config, namespace); raises ConfigError."""
    args = parser.parse_args(argv)
    try:
        return config_from_args(cls, args), args
    except FieldError as e:  # a dataclass's own check: name the flags the user typed
        raise ConfigError(e.render(_flag)) from None
    except OSError as e:
        raise ConfigError(f"--config: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {args.config}: not valid YAML ({' '.join(str(e).split())})") from e


def flag_error(cls: type, error: ValueError, aliases: dict[str, str] | None = None) -> ConfigError:
    """A job's own check of values its flags gave (`cls`'s fields), e.g. a config it builds from
    them, as one line that names the flags: `crops must be 1 or 3` -> `--crops must be 1 or 3`.
    `aliases` maps names the message may use to the field they come from."""
    aliases = aliases or {}
    names = [key for key, _, _, _ in _leaves(cls) if "." not in key] + list(aliases)
    return ConfigError(FieldError("", "", str(error), names).render(lambda key: _flag(aliases.get(key, key))))


def explicit_keys(cls: type, args: argparse.Namespace) -> set[str]:
    """Dotted keys of `cls` that `args` set (in `--config`, as flags or with `--set`), as opposed
    to those left at the dataclass defaults."""
    def flatten(data: Any, prefix: str = "") -> set[str]:
        if not isinstance(data, dict):
            return {prefix[:-1]}
        return set().union(*(flatten(v, f"{prefix}{k}.") for k, v in data.items())) if data else set()

    keys = flatten(load_yaml(args.config)) if getattr(args, "config", None) else set()
    keys |= {key for key, _, _, _ in _leaves(cls) if key in vars(args)}
    keys |= {item.split("=", 1)[0].strip() for item in getattr(args, "_set", [])}
    return keys


def parse_job(cls: type[T], argv: Sequence[str] | None, *, prog: str, doc: str, examples: str = "",
              extra: Callable[[argparse.ArgumentParser], None] | None = None,
              required: Sequence[str] = ()) -> tuple[T, argparse.Namespace]:
    """`job_parser` + `parse_config`, then each field in `required` must be set (raises ConfigError)."""
    parser = job_parser(cls, prog=prog, doc=doc, examples=examples, extra=extra)
    cfg, args = parse_config(cls, parser, argv)
    missing = [name for name in required if getattr(cfg, name) in ("", None)]
    if missing:
        raise ConfigError(", ".join(_flag(n) for n in missing) + ": missing (required)")
    return cfg, args
