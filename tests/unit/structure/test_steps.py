"""Concept paths as text: parsed from what people write, and written as attribution graph node ids."""

from __future__ import annotations

import pytest

from glocal.errors import InputError
from glocal.structure.steps import parse_path, path_id


def test_parse_path():
    assert parse_path("features.40:117 -> features.37:5/features.34:392") == [
        ("features.40", 117),
        ("features.37", 5),
        ("features.34", 392),
    ]
    with pytest.raises(InputError, match="layer:concept"):
        parse_path("features.40")
    # a mistyped separator is named as such, not taken for a layer 'features.40:117 > features.37'
    with pytest.raises(
        InputError, match=r"cannot read 'features.40:117 > features.37:5'.*separate the steps with '->'"
    ):
        parse_path("features.40:117 > features.37:5")


def test_path_id_is_read_back_by_parse_path():
    path = (("features.40", 117), ("features.37", 5))
    assert path_id(path) == "features.40:117/features.37:5"
    assert parse_path(path_id(path)) == list(path)
