"""The small conv net the reference tests look at: two 3x3 convs (padding 1, no pooling, so layer "1" keeps the
12x12 grid and its units see a 5x5 window of the input), then a linear classifier."""

from __future__ import annotations

import torch

SIZE = 12
LAYER = "1"


def two_conv_net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * SIZE * SIZE, 3),
    ).eval()
