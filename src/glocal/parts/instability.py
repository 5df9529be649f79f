"""Location instability (Zhang et al., "Interpreting CNN knowledge via an explanatory graph", AAAI 2018): how far the
position a unit infers for a part wanders relative to annotated landmarks. Lower is better.

For one unit (a part node, or a raw channel as a baseline) over images ``i`` with scores ``s_i`` and inferred
positions ``p_i``:

1. take its top ``K = 20`` images by score;
2. for each landmark ``l``, over those of the top images where it is visible, the distances
   ``d_il = ||q_il - p_i|| / D_i`` between the landmark ``q_il`` and the inferred position, each divided by its
   image's diagonal ``D_i`` (images of one size: the same as dividing the deviation by the diagonal);
3. the standard deviation of the ``d_il`` over images, with ``N - 1`` in the denominator (a landmark visible in fewer
   than two of the top images gives none);
4. the mean over landmarks is the unit's instability.

A layer's instability is the mean over its top ``M`` units, ranked by the mean of their top-``K`` scores; a model's
the mean over layers. A unit that keeps the same offset to every landmark has instability 0, however far away it is.

>>> import torch
>>> positions = torch.tensor([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
>>> landmarks = torch.tensor([[[10.0, 13.0]], [[20.0, 24.0]], [[30.0, 35.0]]])   # 3 images, 1 landmark
>>> round(unit_instability(positions, torch.ones(3), landmarks, diagonals=100.0), 4)   # std(3, 4, 5) / 100
0.01
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError

__all__ = ["TOP_IMAGES", "LayerInstability", "layer_instability", "model_instability", "unit_instability"]

TOP_IMAGES = 20
"""``K``: the images per unit that its instability is measured on (the original's choice)."""


def _check(positions: torch.Tensor, scores: torch.Tensor, landmarks: torch.Tensor) -> None:
    n = positions.shape[0]
    if positions.dim() != 2 or positions.shape[1] != 2:
        raise InputError(f"positions must be (images, 2) rows and columns, got {tuple(positions.shape)}")
    if scores.shape != (n,):
        raise InputError(f"scores must be ({n},), one per image, got {tuple(scores.shape)}")
    if landmarks.dim() != 3 or landmarks.shape[0] != n or landmarks.shape[2] != 2:
        raise InputError(
            f"landmarks must be ({n}, landmarks, 2) with NaN where a landmark is not visible, got "
            f"{tuple(landmarks.shape)}"
        )


def unit_instability(
    positions: torch.Tensor,
    scores: torch.Tensor,
    landmarks: torch.Tensor,
    diagonals: float | torch.Tensor,
    *,
    k: int = TOP_IMAGES,
) -> float:
    """The instability of one unit (see the module docstring).

    Parameters
    ----------
    positions
        ``(I, 2)`` the position the unit infers in each image, in image pixels.
    scores
        ``(I,)`` the unit's score in each image; its top ``k`` images are used.
    landmarks
        ``(I, L, 2)`` landmark positions in the same pixels, NaN where a landmark is not visible.
    diagonals
        The images' diagonals in pixels: one number, or ``(I,)``.
    k
        Top images per unit.

    Returns
    -------
    float
        The mean over landmarks of the standard deviation of the normalised distances; NaN when no landmark is
        visible in two of the top images.
    """
    _check(positions, scores, landmarks)
    if k < 2:
        raise InputError(f"k must be at least 2 (a standard deviation needs two images), got {k}")
    top = scores.double().argsort(descending=True, stable=True)[:k]
    diagonal = torch.as_tensor(diagonals, dtype=torch.float64).expand(positions.shape[0])[top]
    offsets = landmarks[top].double() - positions[top].double()[:, None, :]
    distances = offsets.norm(dim=2) / diagonal[:, None]  # (k, L), NaN where invisible
    deviations = []
    for landmark in range(distances.shape[1]):
        seen = distances[:, landmark][~torch.isnan(distances[:, landmark])]
        if seen.numel() >= 2:
            deviations.append(float(seen.std(unbiased=True)))
    return sum(deviations) / len(deviations) if deviations else math.nan


@dataclass(frozen=True)
class LayerInstability:
    """A layer's instability: the mean over its ``top`` units (ranked by the mean of their top-``k`` scores), each
    unit's own value, and which units were counted."""

    instability: float
    units: tuple[float, ...]
    counted: tuple[int, ...]
    k: int


def layer_instability(
    units: Sequence[tuple[torch.Tensor, torch.Tensor]],
    landmarks: torch.Tensor,
    diagonals: float | torch.Tensor,
    *,
    top: int | None = None,
    k: int = TOP_IMAGES,
) -> LayerInstability:
    """The instability of a layer's units, each given as ``(positions (I, 2), scores (I,))`` over the same images.

    ``top`` units (default: all) with the largest mean top-``k`` score are averaged; units without a visible landmark
    pair (NaN) are left out of the mean.
    """
    if not units:
        raise InputError("give at least one unit as (positions, scores)")
    values = [unit_instability(p, s, landmarks, diagonals, k=k) for p, s in units]
    strength = [float(s.double().sort(descending=True).values[:k].mean()) for _, s in units]
    order = sorted(range(len(units)), key=lambda u: (-strength[u], u))
    counted = tuple(order[: top or len(units)])
    finite = [values[u] for u in counted if not math.isnan(values[u])]
    mean = sum(finite) / len(finite) if finite else math.nan
    return LayerInstability(mean, tuple(values), counted, k)


def model_instability(layers: Mapping[str, LayerInstability]) -> float:
    """The mean over layers of their instabilities (layers without a finite value left out)."""
    finite = [layer.instability for layer in layers.values() if not math.isnan(layer.instability)]
    return sum(finite) / len(finite) if finite else math.nan
