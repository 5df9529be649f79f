"""How concepts build on each other: the layer graph, attribution graphs, concept paths, atlases and fragmentation."""

from typing import Any

from .. import _former


def __getattr__(name: str) -> Any:
    """glocal 0.1's ``glocal.structure`` (model inspection for LRP) is now :mod:`glocal.lrp.model_structure`."""
    return _former.moved("structure", name)
