"""A small CNN with one residual add, whose rules conserve relevance exactly except at that add."""

from __future__ import annotations

import torch
from zennit.layer import Sum


class Residual(torch.nn.Module):
    """``a + relu(conv1(a))`` in forward (``summed=False``), or the same sum through a zennit ``Sum`` module."""

    def __init__(self, summed: bool = False) -> None:
        super().__init__()
        self.conv0 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 3))
        self.sum = Sum() if summed else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.conv0(x))
        b = self.relu(self.conv1(a))
        return self.head(a + b if self.sum is None else self.sum(torch.stack([a, b], dim=-1)))


def residual(summed: bool = False) -> Residual:
    """Positive weights and no biases: every rule conserves exactly, so only the residual add can break it."""
    torch.manual_seed(0)
    model = Residual(summed).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                module.weight.abs_()
                module.bias.zero_()
    return model
