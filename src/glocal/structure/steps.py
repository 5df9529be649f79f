"""Steps of a concept path: ``(layer, concept)`` pairs from the top down, and their text form.

A path ``(("features.40", 117), ("features.37", 5))`` is written ``"features.40:117/features.37:5"`` (the id of an
attribution graph's node); :func:`parse_path` also reads ``->`` or ``,`` between the steps.
"""

from __future__ import annotations

from ..errors import InputError

__all__ = ["Step", "Steps", "parse_path", "path_id"]

Step = tuple[str, int]
"""One concept: ``(layer, concept)``."""

Steps = tuple[Step, ...]
"""A path of concepts from the top down."""


def path_id(path: Steps) -> str:
    """``(("a", 1), ("b", 2))`` to ``"a:1/b:2"``.

    >>> path_id((("features.40", 117), ("features.37", 5)))
    'features.40:117/features.37:5'
    """
    return "/".join(f"{layer}:{concept}" for layer, concept in path)


def parse_path(text: str) -> list[tuple[str, int]]:
    """``"features.40:117 -> features.37:5"`` (or ``/`` or ``,`` between steps) to ``[("features.40", 117), ...]``.

    >>> parse_path("features.40:117 -> features.37:5")
    [('features.40', 117), ('features.37', 5)]
    """
    steps = []
    for part in text.replace("->", "/").replace(",", "/").split("/"):
        part = part.strip()
        if not part:
            continue
        layer, sep, concept = part.rpartition(":")
        if not sep or not layer or ":" in layer or not concept.strip().lstrip("-").isdigit():
            raise InputError(
                f"cannot read {part!r} as a path step; write layer:concept and separate the steps with '->', e.g. "
                "'features.40:117 -> features.37:5'"
            )
        steps.append((layer.strip(), int(concept)))
    if not steps:
        raise InputError(f"the path {text!r} names no step; write e.g. 'features.40:117 -> features.37:5'")
    return steps
