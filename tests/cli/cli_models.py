"""A tiny model, preprocessing and dataset that the command-line tests name as ``cli_models:NAME``."""

import torch


def make() -> torch.nn.Module:
    """A small CNN for 1x12x12 pictures with fixed random weights."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 8 * 8, 3),
    )


def scale(pictures: torch.Tensor) -> torch.Tensor:
    """Pictures in [0, 1] to inputs in [-1, 1]."""
    return pictures * 2 - 1


def dataset() -> torch.utils.data.TensorDataset:
    """Eight fixed random inputs with labels 0, 1, 2, 0, ..."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.rand(8, 1, 12, 12, generator=generator) * 2 - 1
    return torch.utils.data.TensorDataset(inputs, torch.arange(8) % 3)


NOT_CALLABLE = 3


class Dataset(torch.utils.data.Dataset):
    """The same eight inputs as :func:`dataset`, as a Dataset class (``--data cli_models:Dataset``)."""

    def __init__(self) -> None:
        self.inner = dataset()

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, number: int):
        return self.inner[number]
