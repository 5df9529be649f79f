"""A hand-built model whose channels fire at known places, for the part-graph tests (test_part_build, test_locate).

Input ``(N, 2, 16, 16)``: one bright pixel of value ``a`` in channel 0 at place A, one of value ``b`` in channel 1 at
place B. Every convolution is 1 x 1 without bias, so a cell looks at exactly its own pixel (receptive field: scale 1,
offset 0) and relevance never leaves the pixel it started on:

- ``conv1`` (2 -> 4): channel 0 = 1.0 * in0, 1 = 0.8 * in0 (both at A), 2 = 1.2 * in1, 3 = 1.0 * in1 (both at B);
- ``conv2`` (4 -> 2): channel 0 = c0 + c1 = 1.8 a (at A), channel 1 = c2 + c3 = 2.2 b (at B);
- ``fc``: the sum of every cell, so the output is ``y = 1.8 a + 2.2 b``.

Under EpsilonPlus (z+ for the convolutions, epsilon 1e-6 for ``fc``) with all weights and activations >= 0, each rule
splits relevance in proportion to the contributions, and the output's relevance is ``y`` itself. So the relevance
arriving at conv2 is 1.8 a (channel 0) and 2.2 b (channel 1), at conv1 a, 0.8 a, 1.2 b, b, and at the input 1.8 a on
A's pixel and 2.2 b on B's, all up to the epsilon's relative 1e-6.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from zennit.composites import EpsilonPlus

from glocal import Attributor

Place = tuple[int, int]


def two_place_model() -> nn.Sequential:
    conv1 = nn.Conv2d(2, 4, 1, bias=False)
    conv2 = nn.Conv2d(4, 2, 1, bias=False)
    fc = nn.Linear(2 * 16 * 16, 1, bias=False)
    with torch.no_grad():
        conv1.weight.zero_()
        conv2.weight.zero_()
        conv1.weight[:, :, 0, 0] = torch.tensor([[1.0, 0.0], [0.8, 0.0], [0.0, 1.2], [0.0, 1.0]])
        conv2.weight[:, :, 0, 0] = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
        fc.weight.fill_(1.0)
    layers = OrderedDict(conv1=conv1, relu1=nn.ReLU(), conv2=conv2, relu2=nn.ReLU(), flatten=nn.Flatten(), fc=fc)
    return nn.Sequential(layers).eval()


def two_place_images(
    places_a: Sequence[Place], places_b: Sequence[Place], values_a: Sequence[float], values_b: Sequence[float]
) -> torch.Tensor:
    """``(N, 2, 16, 16)``: ``values_a[n]`` at ``places_a[n]`` in channel 0, ``values_b[n]`` at ``places_b[n]`` in
    channel 1 (a value of 0 leaves the channel dark)."""
    images = torch.zeros(len(places_a), 2, 16, 16)
    for n, ((row_a, col_a), (row_b, col_b)) in enumerate(zip(places_a, places_b, strict=True)):
        images[n, 0, row_a, col_a] = values_a[n]
        images[n, 1, row_b, col_b] = values_b[n]
    return images


def two_place_attributor(model: nn.Module | None = None) -> Attributor:
    return Attributor(model if model is not None else two_place_model(), EpsilonPlus())
