"""Models for the parity tests against zennit-crp: the trained FashionMNIST CNN and random-weight torchvision models.

The FashionMNIST model, its images and its composite are those of ``benchmarks/fashion_mnist.py`` (on the import path
through ``tests/conftest.py``); here they skip the test when the data is missing.

Each :class:`Setup` names a chain of three layers to condition on (``top`` ran last in the forward pass), layers to
record without conditioning, two targets, and per chain layer the two channels most relevant to the first target of
sample 0 (so that conditional heatmaps are not zero by accident).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from zennit.composites import EpsilonPlus
from zennit.core import Composite

import fashion_mnist
from fashion_mnist import FashionNet
from glocal import Attributor, ChannelConcept

DATA = fashion_mnist.DATA_DIR


@dataclass
class Setup:
    """A model with everything a parity case needs."""

    name: str
    model: torch.nn.Module
    composite: Callable[[], Composite]  # a fresh composite per call: zennit-crp and glocal each attach their own
    data: torch.Tensor
    top: str
    mid: str
    low: str
    record: list[str]
    targets: tuple[int, int] = (0, 1)
    channels: dict[str, list[int]] = field(default_factory=dict)

    def prepare(self) -> Setup:
        """Pick the targets and the channels from a plain attribution of sample 0."""
        self.model.eval()
        with torch.no_grad():
            order = self.model(self.data[:1]).argsort(1, descending=True)[0]
        self.targets = (int(order[0]), int(order[1]))
        layers = [self.top, self.mid, self.low]
        result = Attributor(self.model, self.composite())(self.data[:1], {"y": [self.targets[0]]}, record=layers)
        for name in layers:
            relevance = ChannelConcept().relevance(result.relevances[name])[0]
            self.channels[name] = relevance.abs().argsort(descending=True)[:2].tolist()
        return self


def require_fashion_data() -> None:
    """Skip the calling test when the FashionMNIST files are not beside the checkout."""
    if not fashion_mnist.available(DATA):
        pytest.skip(f"the FashionMNIST model and images are not in {DATA}")


def fashion_model() -> FashionNet:
    require_fashion_data()
    return fashion_mnist.load_model(DATA)


def fashion_images(count: int) -> torch.Tensor:
    require_fashion_data()
    return fashion_mnist.load_images(count, DATA)


def fashion_labels(count: int) -> torch.Tensor:
    require_fashion_data()
    return fashion_mnist.load_labels(count, DATA)


def fashion_composite() -> Composite:
    return fashion_mnist.composite()


def fashion_setup() -> Setup:
    return Setup(
        name="fashion",
        model=fashion_model(),
        composite=fashion_composite,
        data=fashion_images(3),
        top="linear1",
        mid="conv2",
        low="conv1",
        record=["conv1", "conv2", "linear1", "linear2"],
    ).prepare()


def vgg_setup(name: str, composite: Callable[[], Composite]) -> Setup:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    data = torch.rand(1, 3, 32, 32)
    # vgg11: convs at features.0, 3, 6, 8, 11, 13, 16, 18; vgg16: 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28
    layers = {
        "vgg11": ("features.13", "features.8", "features.3"),
        "vgg16": ("features.24", "features.14", "features.5"),
    }
    top, mid, low = layers[name]
    return Setup(
        name=name,
        model=model,
        composite=composite,
        data=data,
        top=top,
        mid=mid,
        low=low,
        record=["features.0", low, mid, top, "classifier.3"],
    ).prepare()


def resnet_composite() -> Composite:
    from zennit.torchvision import ResNetCanonizer

    return EpsilonPlus(canonizers=[ResNetCanonizer()])


def resnet18_setup() -> Setup:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    torch.manual_seed(1)
    data = torch.rand(1, 3, 32, 32)
    # layer3.0 has a downsampling skip connection around layer3.0.conv1, where exclude_parallel matters
    return Setup(
        name="resnet18",
        model=model,
        composite=resnet_composite,
        data=data,
        top="layer4.0.conv1",
        mid="layer3.0.conv1",
        low="layer2.0.conv2",
        # not layer3.0.downsample.0: a branch parallel to layer3.0.conv1 (see the xfail test on side branches)
        record=[
            "conv1",
            "layer1.0.conv1",
            "layer2.0.conv2",
            "layer3.0.conv1",
            "layer3.1.conv2",
            "layer4.0.conv1",
            "fc",
        ],
    ).prepare()
