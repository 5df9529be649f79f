"""What a preset is: an offline model and how to feed and show it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import GlocalError

__all__ = ["Preset", "PresetError"]


class PresetError(GlocalError, RuntimeError):
    """Something a preset needs (a package with its weights or data) is not installed."""


@dataclass(frozen=True)
class Preset:
    """An offline model and how to feed and show it.

    Attributes
    ----------
    name, description
        The preset's name (``--model NAME``) and one line about it.
    load_model
        A fresh copy of the model, in eval mode.
    class_names
        The names of the model's outputs.
    size, channels
        The pictures the model takes: ``(channels, size, size)``.
    normalise
        Pictures ``(N, channels, size, size)`` in [0, 1] to model inputs.
    picture
        Model inputs back to pictures in [0, 1] (``to_image`` of references and atlas thumbnails).
    layers
        Layers worth explaining by default, earlier to later.
    zoom
        Shorter side of a photo over the crop it is cut to (8/7: torchvision's 256 for 224; 1 keeps the whole image).
    dataset
        A labelled dataset that ships offline for the model (for an index), or ``None``.
    """

    name: str
    description: str
    load_model: Callable[[], torch.nn.Module]
    class_names: Callable[[], list[str]]
    size: int
    channels: int
    normalise: Callable[[torch.Tensor], torch.Tensor]
    picture: Callable[[torch.Tensor], torch.Tensor]
    layers: tuple[str, ...]
    zoom: float = 1.0
    dataset: Callable[[], Any] | None = None
