"""Which channels to remove: the lowest-scored ones (or the highest), per layer or over all layers at once.

At rate ``r`` a layer of ``C`` channels loses ``floor(r * C)`` of them (layer scope); in global scope the
``floor(r * sum C)`` lowest scores of all layers together go (compare normalised scores there). Ties are broken by
layer order, then channel index (the lower goes first), and no layer keeps fewer than ``keep`` channels.
``remove="most"`` removes the highest scores first instead: what the scores' samples (e.g. one class) rely on most.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, LayerError
from .criteria import ChannelScores

__all__ = ["PruningPlan", "prune_plan"]


@dataclass(frozen=True)
class PruningPlan:
    """The channels to remove: ``removed[layer]`` (sorted indices) of the ``channels[layer]`` of each layer."""

    channels: Mapping[str, int]
    removed: Mapping[str, tuple[int, ...]]
    criterion: str

    @property
    def sparsity(self) -> float:
        """Removed channels over all channels of the plan's layers."""
        total = sum(self.channels.values())
        return sum(len(r) for r in self.removed.values()) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": dict(self.channels),
            "removed": {name: list(r) for name, r in self.removed.items()},
            "criterion": self.criterion,
            "sparsity": self.sparsity,
        }


def _count(rate: float, channels: int) -> int:
    return math.floor(rate * channels + 1e-9)


def _check_rate(rate: Any, what: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= float(rate) <= 1.0:
        raise InputError(f"{what} must be a number in [0, 1] (the share of channels to remove), got {rate!r}")
    return float(rate)


def prune_plan(
    scores: ChannelScores,
    rate: float | Mapping[str, float],
    *,
    scope: str = "layer",
    keep: int = 1,
    remove: str = "least",
) -> PruningPlan:
    """Remove the lowest-scored channels of each scored layer.

    Parameters
    ----------
    scores
        Channel scores (:func:`~glocal.pruning.channel_scores`).
    rate
        Share of channels to remove, in [0, 1]; in layer scope also a mapping layer -> rate (missing layers: 0).
    scope
        ``"layer"``: each layer loses its own share; ``"global"``: the lowest scores over all layers.
    keep
        Every layer keeps at least this many channels.
    remove
        ``"least"``: the lowest scores go first (pruning); ``"most"``: the highest go first (ablating what the
        scores' samples need most).

    Examples
    --------
    >>> import torch
    >>> scores = ChannelScores("weight", {"a": torch.tensor([0.4, 0.1, 0.3, 0.2])}, 0, None, False, True)
    >>> prune_plan(scores, 0.5).removed, prune_plan(scores, 0.5, remove="most").removed
    ({'a': (1, 3)}, {'a': (0, 2)})
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    if remove not in ("least", "most"):
        raise ValueError(f"remove must be 'least' or 'most' (important channels first), got {remove!r}")
    sign = 1.0 if remove == "least" else -1.0
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InputError(f"keep must be a positive number of channels every layer keeps, got {keep!r}")
    layers = list(scores.scores)
    channels = {name: int(scores.scores[name].numel()) for name in layers}
    if isinstance(rate, Mapping):
        if scope == "global":
            raise InputError("a rate per layer needs scope='layer'; give one number for scope='global'")
        unknown = [name for name in rate if name not in channels]
        if unknown:
            raise LayerError(f"rates for layers {unknown} that were not scored; scored layers: {layers}")
        rates = {name: _check_rate(rate.get(name, 0.0), f"rate of layer {name!r}") for name in layers}
    else:
        rates = dict.fromkeys(layers, _check_rate(rate, "rate"))
    removed: dict[str, list[int]] = {name: [] for name in layers}
    if scope == "layer":
        for name in layers:
            values = [sign * v for v in scores.scores[name].tolist()]
            order = sorted(range(channels[name]), key=lambda c: (values[c], c))
            removed[name] = order[: min(_count(rates[name], channels[name]), max(channels[name] - keep, 0))]
    else:
        pool = [
            (sign * float(value), position, c)
            for position, name in enumerate(layers)
            for c, value in enumerate(scores.scores[name].tolist())
        ]
        wanted = _count(rates[layers[0]], sum(channels.values())) if layers else 0
        for _, position, c in sorted(pool):
            if wanted == 0:
                break
            name = layers[position]
            if channels[name] - len(removed[name]) > keep:
                removed[name].append(c)
                wanted -= 1
    return PruningPlan(channels, {name: tuple(sorted(r)) for name, r in removed.items()}, scores.criterion)
