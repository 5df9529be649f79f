"""Conditions: which concepts let relevance through, per layer, and which outputs start it.

A :class:`Condition` maps layer names to the concept ids that let relevance pass at that layer (an empty tuple
blocks the layer) and lists the *targets*: the output units whose relevance starts the backward pass (several add up).
zennit-crp's dict form ``{"features.28": [50], "y": [1]}`` is accepted everywhere a condition is.

Examples
--------
>>> Condition.from_dict({"features.28": [50], "y": [1]})
Condition(targets=(1,), layers={'features.28': (50,)})
>>> Condition(targets=3, layers={"conv2": [0, 4]}).to_dict()
{'conv2': [0, 4], 'y': [3]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConditionError

__all__ = ["OUTPUT", "Condition", "PerSample", "as_conditions"]

OUTPUT = "y"
"""The name zennit-crp's dict form uses for the model output."""


@dataclass(frozen=True)
class PerSample:
    """One id list per sample of the batch: ``PerSample([[3, 5], [7]])`` uses ids 3 and 5 for sample 0, 7 for 1."""

    values: tuple[tuple[int, ...], ...]

    def __init__(self, values: Iterable[Iterable[int]]) -> None:
        object.__setattr__(self, "values", tuple(tuple(_ints(v, "per-sample ids")) for v in values))

    def __len__(self) -> int:
        return len(self.values)


Ids = tuple[int, ...] | PerSample


def _ints(values: Any, what: str) -> list[int]:
    if isinstance(values, int) or (hasattr(values, "__index__") and not hasattr(values, "__len__")):
        values = [values]
    if hasattr(values, "tolist"):
        values = values.tolist()
        if isinstance(values, int):
            values = [values]
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConditionError(f"{what} must be integers or lists of integers, got {values!r}") from None
    return out


def _ids(value: Any, what: str) -> Ids:
    if isinstance(value, PerSample):
        return value
    return tuple(_ints(value, what))


@dataclass(frozen=True)
class Condition:
    """Targets and per-layer concept ids of one conditional attribution.

    Parameters
    ----------
    targets
        Output units whose relevance starts the backward pass: an int, a sequence of ints (they add up),
        a :class:`PerSample`, or ``None`` when ``init_rel`` or ``start_layer`` is given instead.
    layers
        Layer name to concept ids. An empty sequence blocks all relevance through that layer.
    """

    targets: Ids | None = None
    layers: Mapping[str, Ids] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.targets is not None:
            object.__setattr__(self, "targets", _ids(self.targets, "targets"))
        if not isinstance(self.layers, Mapping):
            raise ConditionError(f"layers must map layer names to concept ids, got {type(self.layers).__name__}")
        layers = {}
        for name, ids in self.layers.items():
            if not isinstance(name, str):
                raise ConditionError(f"layer names must be strings, got {name!r}")
            layers[name] = _ids(ids, f"concept ids of layer {name!r}")
        object.__setattr__(self, "layers", layers)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], output_name: str = OUTPUT) -> Condition:
        """Read zennit-crp's form ``{"layer": [ids], "y": [targets]}``."""
        if not isinstance(mapping, Mapping):
            raise ConditionError(
                f"a condition is a dict like {{'features.28': [50], 'y': [1]}} or a glocal.Condition, got {mapping!r}"
            )
        layers = {key: value for key, value in mapping.items() if key != output_name}
        return cls(targets=mapping.get(output_name), layers=layers)

    def to_dict(self, output_name: str = OUTPUT) -> dict[str, Any]:
        """zennit-crp's dict form; per-sample ids are kept as :class:`PerSample`."""
        out: dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.layers.items()}
        if self.targets is not None:
            out[output_name] = list(self.targets) if isinstance(self.targets, tuple) else self.targets
        return out

    def per_sample(self, ids: Ids, n_samples: int, what: str) -> list[tuple[int, ...]]:
        """``ids`` expanded to one tuple per sample."""
        if isinstance(ids, PerSample):
            if len(ids) != n_samples:
                raise ConditionError(
                    f"{what} gives ids for {len(ids)} samples but the batch has {n_samples}; "
                    "give one list per sample or a plain list for all"
                )
            return list(ids.values)
        return [ids] * n_samples


def as_conditions(
    conditions: Condition | Mapping[str, Any] | Sequence[Condition | Mapping[str, Any]], output_name: str = OUTPUT
) -> list[Condition]:
    """Normalise one condition or a list of them (typed or dict form) to a list of :class:`Condition`."""
    if isinstance(conditions, Condition | Mapping):
        conditions = [conditions]
    if not isinstance(conditions, Sequence) or isinstance(conditions, str):
        raise ConditionError(f"conditions must be a list of dicts or glocal.Condition objects, got {conditions!r}")
    if len(conditions) == 0:
        raise ConditionError("no conditions given; pass at least one, e.g. [{'y': [0]}]")
    return [c if isinstance(c, Condition) else Condition.from_dict(c, output_name) for c in conditions]
