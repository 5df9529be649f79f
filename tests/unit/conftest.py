"""Small seeded models shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from zennit.layer import Sum


class SkipNet(torch.nn.Module):
    """A small network with the FashionMNIST model's shape: a conv branch and a parallel skip branch, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.parallel = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, stride=2, bias=False), torch.nn.BatchNorm2d(4))
        self.conv1 = torch.nn.Conv2d(1, 4, 3)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, stride=2)
        self.bn2 = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()
        self.relu2 = torch.nn.ReLU()
        self.relu3 = torch.nn.ReLU()
        self.sum = Sum()
        self.flatten = torch.nn.Flatten()
        self.linear1 = torch.nn.Linear(4 * 6 * 6, 8)
        self.linear2 = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = self.parallel(x)
        out = self.relu2(self.sum(torch.stack([identity, out], dim=-1)))
        out = self.relu3(self.linear1(self.flatten(out)))
        return self.linear2(out)


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)


@pytest.fixture
def skip_net() -> SkipNet:
    torch.manual_seed(0)
    model = SkipNet()
    _randomise_batchnorm(model)
    return model.eval()


@pytest.fixture
def conv_net() -> torch.nn.Sequential:
    """A plain sequential conv net (VGG-like, in-place ReLUs, max pooling)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(6, 8, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
        torch.nn.ReLU(inplace=True),
        torch.nn.Linear(10, 5),
    ).eval()


@pytest.fixture
def images() -> Iterator[torch.Tensor]:
    torch.manual_seed(1)
    yield torch.rand(3, 3, 8, 8)


@pytest.fixture
def digits() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.rand(3, 1, 16, 16)
