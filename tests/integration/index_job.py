"""A small scan job run in subprocesses by the index tests: the same data and model in every process.

Usage: python index_job.py DIRECTORY [--distributed] [--pause SECONDS]
"""

from __future__ import annotations

import argparse
import time

import torch
from zennit.composites import EpsilonPlusFlat

from glocal.index import build_index


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(6, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 5),
    ).eval()


def dataset() -> torch.utils.data.Dataset:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(61, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 5, (61,), generator=generator)
    return torch.utils.data.TensorDataset(images, labels)


class Slow(torch.utils.data.Dataset):
    """Pauses on every item so that a test can kill the scan in the middle."""

    def __init__(self, inner: torch.utils.data.Dataset, pause: float) -> None:
        self.inner, self.pause = inner, pause

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        time.sleep(self.pause)
        return self.inner[index]


def build(data: torch.utils.data.Dataset, directory: str, progress: bool = False):
    return build_index(
        model(),
        EpsilonPlusFlat(),
        data,
        ["2", "5"],
        directory,
        k=4,
        batch_size=4,
        checkpoint_every=1,
        store_matrix=True,
        progress=progress,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.distributed:
        torch.distributed.init_process_group("gloo")
    data = Slow(dataset(), args.pause)  # the same dataset class in every run, paused or not
    build(data, args.directory)
    if args.distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    import index_job  # run the module under its own name, so that fingerprints name its classes the same everywhere

    index_job.main()
