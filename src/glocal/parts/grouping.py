"""Which channels find the same part: co-location across images, and average-linkage grouping.

Two channels of a layer find the same part when, in the images where both carry relevance, they point at the same
place. Their distance is the **median** over those images of ``||p_i(a) - p_i(b)||`` divided by the image diagonal
(the median, because a part hidden in a few images sends both channels elsewhere there); channels present together
in fewer than ``min_common`` images have no distance (infinite): co-occurrence is part of being one part.

Channels are then grouped by average linkage: start from singletons and repeatedly merge the two groups whose mean
pairwise distance is smallest, while it is at most ``radius``. A pair with no distance makes the mean infinite, so
a group never holds two channels that were not seen together. Ties merge the groups with the lowest channel first,
so the result does not depend on anything but the distances.

>>> positions = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [9.0, 9.0]]] * 3)    # 3 images, 3 channels
>>> distances = colocation_distances(positions, torch.ones(3, 3, dtype=torch.bool), diagonal=10.0)
>>> [round(float(d), 3) for d in distances[0]], average_linkage(distances, radius=0.2)
([0.0, 0.1, 1.273], [[0, 1], [2]])
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError

__all__ = ["MIN_COMMON", "average_linkage", "colocation_distances"]

MIN_COMMON = 3
"""Images two channels must both be present in to have a distance: with fewer, one coincidence decides."""


def colocation_distances(
    positions: torch.Tensor, present: torch.Tensor, diagonal: float, min_common: int = MIN_COMMON
) -> torch.Tensor:
    """``(C, C)`` median distance (a fraction of ``diagonal``) between channels' positions ``(N, C, 2)`` over the
    images where both are ``present`` ``(N, C)``; ``inf`` for pairs present together in fewer than ``min_common``."""
    if positions.dim() != 3 or positions.shape[2] != 2:
        raise InputError(f"positions must be (images, channels, 2), got {tuple(positions.shape)}")
    if present.shape != positions.shape[:2]:
        raise InputError(f"present must be {tuple(positions.shape[:2])}, got {tuple(present.shape)}")
    channels = positions.shape[1]
    gaps = (positions[:, :, None] - positions[:, None, :]).norm(dim=-1) / diagonal  # (N, C, C)
    both = present[:, :, None] & present[:, None, :]
    out = torch.full((channels, channels), math.inf, dtype=torch.float64)
    for a in range(channels):
        out[a, a] = 0.0
        for b in range(a + 1, channels):
            common = gaps[both[:, a, b], a, b]
            if common.numel() >= min_common:
                out[a, b] = out[b, a] = float(common.double().median())
    return out


def average_linkage(distances: torch.Tensor, radius: float) -> list[list[int]]:
    """Groups of indices, merged by average linkage while the closest pair of groups is at most ``radius`` apart;
    each group sorted, groups ordered by their first index."""
    if distances.dim() != 2 or distances.shape[0] != distances.shape[1]:
        raise InputError(f"distances must be a square (C, C) matrix, got {tuple(distances.shape)}")
    groups = [[i] for i in range(distances.shape[0])]
    while len(groups) > 1:
        best, pair = math.inf, (0, 0)
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                link = float(distances[groups[i]][:, groups[j]].mean())
                if link < best:
                    best, pair = link, (i, j)
        if best > radius or best == math.inf:  # an infinite link never merges, even with radius = inf
            break
        i, j = pair
        groups[i] = sorted(groups[i] + groups[j])
        del groups[j]
    return sorted(groups, key=lambda g: g[0])
