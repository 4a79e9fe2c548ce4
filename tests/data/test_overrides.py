"""A section derived from another dataclass's declaration: its fields, types, defaults and help."""

from __future__ import annotations

import pickle
import typing
from dataclasses import dataclass, fields

import pytest

from pipeline.cli import field_comments
from pipeline.data.overrides import overrides_of


@dataclass
class Source:
    size: int | None = 224  # square crop side; None keeps whole frames
    rate: int = 32  # frames between samples
    tries: int = 3  # tries per video


def _check(self) -> None:
    if self.rate is not None and self.rate < 1:
        raise ValueError(f"rate must be >= 1, got {self.rate}")


Over = overrides_of(Source, ("size", "rate", "tries"), name="Over", module=__name__, doc="Overrides.",
                    unset={"size": "the recipe's", "rate": "the recipe's"}, defaults={"rate": 8}, check=_check)


def test_unset_fields_are_optional_none_and_the_others_keep_the_source_declaration():
    hints = typing.get_type_hints(Over)
    assert hints["size"] == typing.Optional[int] and hints["rate"] == typing.Optional[int] and hints["tries"] is int
    assert Over() == Over(size=None, rate=8, tries=3) and [f.name for f in fields(Over)] == ["size", "rate", "tries"]
    assert Over.__doc__ == "Overrides." and pickle.loads(pickle.dumps(Over(size=16))) == Over(size=16)
    with pytest.raises(ValueError, match="rate must be >= 1"):
        Over(rate=0)


def test_help_is_the_source_comment_with_what_none_means():
    assert field_comments(Over) == {"size": "square crop side (None: the recipe's)",
                                    "rate": "frames between samples (None: the recipe's)",
                                    "tries": "tries per video"}


def test_fields_that_the_source_lacks_are_refused():
    with pytest.raises(ValueError, match="nosuch"):
        overrides_of(Source, ("size", "nosuch"), name="X", module=__name__, doc="", unset={})
