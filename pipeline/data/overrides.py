"""A config section made of another dataclass's fields, declared once there (no Ray).

    ClipOverrides = overrides_of(ClipConfig, ("num_frames", "crops", "clips_per_decode"),
                                 name="ClipOverrides", module=__name__, doc="...",
                                 unset={"num_frames": "the checkpoint's recipe", "crops": "the recipe's"})
    ClipOverrides(num_frames=16)   # num_frames=16, crops=None (not given), clips_per_decode=8

Each field of the new dataclass is derived from the source's: a field named in `unset` becomes
`Optional[<its type>]` with default None, meaning "not given" (the caller decides later what
stands in, e.g. a checkpoint's recipe); the others keep the source's type and default. Every
field carries the source's help (the `# comment` on its line, `pipeline.cli.field_comments`) in
`field(metadata={"help": ...})`, since a generated class has no source lines of its own; for a
field in `unset`, the source's words about None (a `; None...` clause) give way to
`(None: <unset[name]>)`. A default or a help text therefore lives once, in the source class.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Callable, Mapping, Optional, Sequence

from pipeline.cli import field_comments

_NONE_CLAUSE = re.compile(r";\s*None\b[^;]*")  # "square crop side; None keeps whole frames" -> "square crop side"


def overrides_of(cls: type, names: Sequence[str], *, name: str, module: str, doc: str,
                 unset: Mapping[str, str], defaults: Mapping[str, Any] | None = None,
                 check: Callable[[Any], None] | None = None) -> type:
    """A dataclass `name` (importable as `module.name`, so pickle finds it) of the fields `names`
    of dataclass `cls`, see the module docstring. `defaults` replaces the default of some fields
    (for one in `unset`, a given value that is not None); `check(self)` becomes `__post_init__`
    (raise ValueError naming the fields by their names)."""
    source = {f.name: f for f in dataclasses.fields(cls)}
    defaults = dict(defaults or {})
    unknown = sorted((set(names) | set(unset) | set(defaults)) - set(source))
    if unknown or not set(unset) <= set(names) or not set(defaults) <= set(names):
        raise ValueError(f"overrides_of({cls.__name__}): {unknown or sorted(set(unset) | set(defaults))} "
                         f"are not among the fields {list(names)} of {cls.__name__}")
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    specs = []
    for key in names:
        text = comments.get(key, "")
        if key in unset:
            tp: Any = Optional[hints[key]]
            text = f"{_NONE_CLAUSE.sub('', text).strip()} (None: {unset[key]})".strip()
            spec = dataclasses.field(default=defaults.get(key), metadata={"help": text})
        else:
            tp = hints[key]
            spec = _copied(source[key], defaults, text)
        specs.append((key, tp, spec))
    namespace = {"__post_init__": check} if check is not None else {}
    out = dataclasses.make_dataclass(name, specs, namespace=namespace)
    out.__module__, out.__doc__ = module, doc
    return out


def _copied(f: dataclasses.Field, defaults: Mapping[str, Any], text: str) -> dataclasses.Field:
    """The declaration of field `f` again, with its help text (and a default from `defaults`)."""
    metadata = {**f.metadata, "help": text}
    if f.name in defaults:
        return dataclasses.field(default=defaults[f.name], metadata=metadata)
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory, metadata=metadata)
    return dataclasses.field(default=f.default, metadata=metadata)
