"""The trained FashionMNIST CNN and its validation images (``../shared/data`` beside the checkout), defined once.

The benchmarks and the tests both use this model; it lives here, beside the benchmark scripts, because they are
scripts run as ``python benchmarks/bench_x.py`` (their folder is on ``sys.path``, so they import this module as a
sibling without any path setup), while the tests are run by pytest, whose ``tests/conftest.py`` adds this folder to
``sys.path`` once for every test. The other way round, each script would have to reach into ``tests/`` and import
pytest. Nothing here imports pytest: the tests skip through :func:`available`.

The files (see ``../shared/data/README.md``): ``fashion_cnn.pt``, a plain state dict of :class:`FashionNet`, and
``fashion_val.npz`` with ``val_set`` (uint8, (5000, 28, 28)) and ``targets`` (int64, (5000,)). Users do not have
them: library code never needs them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlus
from zennit.layer import Sum

__all__ = [
    "DATA_DIR",
    "FashionNet",
    "available",
    "composite",
    "load_images",
    "load_labels",
    "load_model",
]

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODEL_FILE = "fashion_cnn.pt"
VALIDATION_FILE = "fashion_val.npz"


class FashionNet(torch.nn.Module):
    """The FashionMNIST classifier of ``../shared/data`` (zennit-crp's regression-test model).

    Module names are the layer names users condition on; ``parallel`` is the skip branch, summed with the conv
    branch by ``sum`` (a module, so that LRP rules reach the residual add).
    """

    def __init__(self) -> None:
        super().__init__()
        self.parallel = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 5, stride=2, bias=False), torch.nn.BatchNorm2d(16))
        self.conv1 = torch.nn.Conv2d(1, 16, 3)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, stride=2)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.relu = torch.nn.ReLU()
        self.sum = Sum()
        self.maxpooling = torch.nn.MaxPool2d(2)
        self.flatten = torch.nn.Flatten()
        self.linear1 = torch.nn.Linear(576, 120)
        self.linear2 = torch.nn.Linear(120, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = self.parallel(x)
        out = self.relu(self.sum(torch.stack([identity, out], dim=-1)))
        out = self.flatten(self.maxpooling(out))
        out = self.relu(self.linear1(out))
        return self.linear2(out)


def available(data_dir: Path = DATA_DIR) -> bool:
    """Whether both files are in ``data_dir``."""
    return (data_dir / MODEL_FILE).is_file() and (data_dir / VALIDATION_FILE).is_file()


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"expected the FashionMNIST file {path.name} in {path.parent}, found nothing there; put the project's "
            "shared data folder beside the checkout (../shared/data) or pass its path (--data-dir)"
        )
    return path


def load_model(data_dir: Path = DATA_DIR) -> FashionNet:
    """The trained model, in eval mode (a fresh copy on every call)."""
    model = FashionNet()
    model.load_state_dict(torch.load(_require(data_dir / MODEL_FILE), weights_only=True))
    return model.eval()


def load_images(count: int | None = None, data_dir: Path = DATA_DIR) -> torch.Tensor:
    """The first ``count`` validation images (all when ``None``), float32 in [0, 1], ``(N, 1, 28, 28)``."""
    with np.load(_require(data_dir / VALIDATION_FILE)) as data:
        values = data["val_set"][:count]
    return torch.tensor(values / 255.0, dtype=torch.float32)[:, None]


def load_labels(count: int | None = None, data_dir: Path = DATA_DIR) -> torch.Tensor:
    """The labels of the first ``count`` validation images (all when ``None``), int64, ``(N,)``."""
    with np.load(_require(data_dir / VALIDATION_FILE)) as data:
        return torch.tensor(data["targets"][:count], dtype=torch.int64)


def composite() -> EpsilonPlus:
    """The LRP rules used with this model: ``EpsilonPlus`` with its batch norms merged into the convolutions."""
    return EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])
