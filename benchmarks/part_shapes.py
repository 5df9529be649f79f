"""Synthetic objects made of parts, with the true part centres known: the data of issue 13's synthetic benchmark.

Every class is an object of three parts drawn from one vocabulary (:data:`PARTS`: a disc, a square, a ring, a cross, a
striped patch and a triangle), at class-specific offsets from the object's centre (:data:`CLASSES`). Each image draws,
from a seeded generator, the object's centre and scale, a small jitter of every part, the parts' colours and a noisy
background; the parts are painted as masks, and each part's centre is the centre it was painted at. Parts that two
classes share (the disc, the ring) are the same pattern in different places, so a part detector must find the part,
not the class.

>>> images = part_images(8, size=64, seed=0)
>>> images.pictures.shape, images.labels.tolist(), images.centres.shape
(torch.Size([8, 3, 64, 64]), [0, 1, 2, 3, 0, 1, 2, 3], torch.Size([8, 6, 2]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["CLASSES", "PARTS", "PartImages", "part_images", "part_mask"]

PARTS = ("disc", "square", "ring", "cross", "stripes", "triangle")
"""The part vocabulary; ``centres[:, k]`` is the centre of ``PARTS[k]`` (NaN when the class has no such part)."""

CLASSES = (
    {"disc": (-0.30, -0.25), "square": (-0.30, 0.25), "stripes": (0.30, 0.0)},
    {"disc": (0.30, -0.25), "ring": (-0.30, 0.0), "triangle": (0.30, 0.25)},
    {"ring": (0.0, -0.30), "cross": (0.0, 0.30), "square": (0.35, 0.0)},
    {"cross": (-0.30, -0.30), "triangle": (-0.30, 0.30), "stripes": (0.30, 0.0)},
)
"""Per class, its parts' offsets (row, column) from the object centre, in units of the object's size."""


@dataclass(frozen=True)
class PartImages:
    """Pictures ``(N, 3, S, S)`` in [0, 1], labels ``(N,)``, and part centres ``(N, len(PARTS), 2)`` (row, column in
    pixels; NaN for a part the image's class does not have)."""

    pictures: torch.Tensor
    labels: torch.Tensor
    centres: torch.Tensor


def part_mask(part: str, rows: torch.Tensor, cols: torch.Tensor, radius: float) -> torch.Tensor:
    """Where ``part`` covers the pixels, given the pixels' offsets ``rows``, ``cols`` from its centre."""
    distance = torch.sqrt(rows**2 + cols**2)
    if part == "disc":
        return distance <= radius
    if part == "square":
        return (rows.abs() <= radius * 0.85) & (cols.abs() <= radius * 0.85)
    if part == "ring":
        return (distance <= radius) & (distance >= radius * 0.55)
    if part == "cross":
        arm = radius * 0.3
        inside = (rows.abs() <= radius) & (cols.abs() <= radius)
        return inside & ((rows.abs() <= arm) | (cols.abs() <= arm))
    if part == "stripes":
        inside = (rows.abs() <= radius * 0.85) & (cols.abs() <= radius * 0.85)
        return inside & (torch.floor((cols + radius) / (radius * 0.4)) % 2 == 0)
    if part == "triangle":  # pointing up, its centre at the middle of its height
        return (rows <= radius * 0.75) & (rows >= -radius * 0.75) & (cols.abs() <= (rows + radius * 0.75) * 0.6)
    raise ValueError(f"unknown part {part!r}; the parts are {PARTS}")


def part_images(count: int, *, size: int = 64, seed: int = 0, jitter: float = 0.06) -> PartImages:
    """``count`` images, classes in turn (0, 1, 2, 3, 0, ...), drawn from ``seed`` (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    rows, cols = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    pictures = torch.empty(count, 3, size, size)
    centres = torch.full((count, len(PARTS), 2), math.nan)
    labels = torch.arange(count) % len(CLASSES)
    for n in range(count):
        layout = CLASSES[int(labels[n])]
        scale = float(uniform(0.55, 0.8, 1)) * size  # the object's size in pixels
        centre = uniform(0.5 * size - 0.12 * size, 0.5 * size + 0.12 * size, 2)
        picture = uniform(0.0, 0.35, 3, 1, 1) + uniform(-0.08, 0.08, 3, size, size)  # a tinted, noisy background
        for part, (d_row, d_col) in layout.items():
            where = centre + torch.tensor([d_row, d_col]) * scale + uniform(-jitter, jitter, 2) * scale
            radius = scale * float(uniform(0.13, 0.17, 1))
            mask = part_mask(part, rows - where[0], cols - where[1], radius)
            picture = torch.where(mask, uniform(0.55, 1.0, 3, 1, 1), picture)
            centres[n, PARTS.index(part)] = where
        pictures[n] = picture.clamp(0, 1)
    return PartImages(pictures, labels, centres)
