"""A small CNN for the synthetic part images of :mod:`part_shapes`, trained inside the benchmark (seeded, on the CPU).

Convolutions with ``padding=1`` keep the feature maps aligned with the picture, so a channel's peak says where in the
picture it fired; max pooling halves the maps twice; global max pooling and one linear layer classify. Every class
has its own set of three parts, so the network learns part detectors.

Run ``python benchmarks/part_model.py`` to train once and print the held-out accuracy and the time it took.
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict
from dataclasses import dataclass

import torch

from part_shapes import CLASSES, part_images

__all__ = ["TrainedPartCNN", "part_cnn", "train_part_cnn"]

WIDTHS = (8, 8, 16, 16, 32)
"""Channels of conv1 ... conv5."""


def part_cnn(widths: tuple[int, int, int, int, int] = WIDTHS, pooling: str = "max") -> torch.nn.Sequential:
    """The untrained network: ``(N, 3, S, S)`` pictures to ``(N, 4)`` class logits, layers named ``conv1`` ...
    ``conv5``, ``relu1`` ... ``relu5``, ``pool1``, ``pool2`` (2 x 2 max), ``pool3`` (global ``"max"`` or
    ``"average"`` pooling), ``flatten``, ``fc``.

    Global max pooling is the default: a class is a set of parts, so "is the part anywhere" is the question, and it
    trains several times faster (seeded runs on 2000 images: 100 % held-out accuracy after two epochs, where global
    average pooling stood at 35 % after two and 43 % after three)."""
    if pooling not in ("max", "average"):
        raise ValueError(f"pooling must be 'max' or 'average', got {pooling!r}")
    c1, c2, c3, c4, c5 = widths
    pool: torch.nn.Module = torch.nn.AdaptiveMaxPool2d(1) if pooling == "max" else torch.nn.AdaptiveAvgPool2d(1)
    layers: OrderedDict[str, torch.nn.Module] = OrderedDict(
        [
            ("conv1", torch.nn.Conv2d(3, c1, 3, padding=1)),
            ("relu1", torch.nn.ReLU()),
            ("conv2", torch.nn.Conv2d(c1, c2, 3, padding=1)),
            ("relu2", torch.nn.ReLU()),
            ("pool1", torch.nn.MaxPool2d(2)),
            ("conv3", torch.nn.Conv2d(c2, c3, 3, padding=1)),
            ("relu3", torch.nn.ReLU()),
            ("conv4", torch.nn.Conv2d(c3, c4, 3, padding=1)),
            ("relu4", torch.nn.ReLU()),
            ("pool2", torch.nn.MaxPool2d(2)),
            ("conv5", torch.nn.Conv2d(c4, c5, 3, padding=1)),
            ("relu5", torch.nn.ReLU()),
            ("pool3", pool),
            ("flatten", torch.nn.Flatten()),
            ("fc", torch.nn.Linear(c5, len(CLASSES))),
        ]
    )
    for module in layers.values():
        if isinstance(module, torch.nn.Conv2d):  # He initialisation: PyTorch's default makes the start slow
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)
    return torch.nn.Sequential(layers)


@dataclass(frozen=True)
class TrainedPartCNN:
    """The trained network (eval mode), its accuracy on the held-out images, the training time (wall clock and the
    process's CPU time over all threads, both including drawing the training images), and the seeds of the training
    and test images (``part_images(..., seed=train_seed)``)."""

    model: torch.nn.Sequential
    accuracy: float
    seconds: float
    cpu_seconds: float
    train_seed: int
    test_seed: int


def train_part_cnn(
    seed: int = 0,
    train: int = 4000,
    test: int = 1000,
    epochs: int = 3,
    threads: int = 2,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    size: int = 64,
) -> TrainedPartCNN:
    """Train :func:`part_cnn` with Adam (its learning rate annealed to 0 on a cosine) on ``train`` images drawn with
    seed ``1000 + seed``, and measure it on ``test`` images drawn with seed ``2000 + seed``; the weights and the batch
    order follow ``seed``. ``threads`` is the number of torch threads while training (restored afterwards).

    Seeds 0, 1, 2 with the defaults: 99.9 %, 100 %, 100 % held-out accuracy in 23-27 s with 2 threads."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        train_seed, test_seed = 1000 + seed, 2000 + seed
        training = part_images(train, size=size, seed=train_seed)
        torch.manual_seed(seed)
        model = part_cnn()
        optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
        steps = epochs * -(-train // batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)  # lower at the end: a steadier model
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            permutation = torch.randperm(train, generator=order)
            for begin in range(0, train, batch_size):
                batch = permutation[begin : begin + batch_size]
                loss = torch.nn.functional.cross_entropy(model(training.pictures[batch]), training.labels[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
        model.eval()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        held_out = part_images(test, size=size, seed=test_seed)
        with torch.no_grad():
            predictions = torch.cat([model(chunk).argmax(1) for chunk in held_out.pictures.split(256)])
        accuracy = float((predictions == held_out.labels).float().mean())
    finally:
        torch.set_num_threads(previous_threads)
    return TrainedPartCNN(model, accuracy, seconds, cpu_seconds, train_seed, test_seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    trained = train_part_cnn(seed=arguments.seed, epochs=arguments.epochs, threads=arguments.threads)
    print(
        f"accuracy {trained.accuracy:.4f} on held-out images, trained in {trained.seconds:.1f} s "
        f"({trained.cpu_seconds:.1f} s of CPU time, {arguments.threads} threads)"
    )


if __name__ == "__main__":
    main()
