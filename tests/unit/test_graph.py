"""The layer graph through skip connections, concatenations and functional ops."""

from __future__ import annotations

import pytest
import torch

from glocal.graph import trace_layers


def test_skip_branch_model(skip_net):
    graph = trace_layers(skip_net, torch.rand(1, 1, 16, 16))
    # forward order: conv1, conv2, then the parallel branch, then the head
    assert graph.layers == ("conv1", "conv2", "parallel.0", "linear1", "linear2")
    assert graph.inputs["conv1"] == () and graph.inputs["parallel.0"] == ()
    assert graph.inputs["conv2"] == ("conv1",)
    assert graph.inputs["linear1"] == ("conv2", "parallel.0")  # through the stacked sum and the flatten
    assert graph.outputs("conv1") == ("conv2",)
    assert graph.upstream("linear2") == ("linear1", "conv2", "parallel.0", "conv1")


def test_resnet_blocks_and_model_unchanged():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    hooks_before = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    graph = trace_layers(model, torch.rand(1, 3, 32, 32))
    assert graph.inputs["layer1.0.conv1"] == ("conv1",)  # through bn, relu and max pooling
    assert graph.inputs["layer1.0.conv2"] == ("layer1.0.conv1",)
    # the second block sees the first block's output: its conv2 (main path) and the stem (identity skip)
    assert graph.inputs["layer1.1.conv1"] == ("conv1", "layer1.0.conv2")
    # a downsampling block: the 1x1 shortcut conv reads the previous block's output, in parallel to conv1
    assert graph.inputs["layer2.0.downsample.0"] == graph.inputs["layer2.0.conv1"]
    assert graph.inputs["fc"] == ("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2")  # forward order
    assert hooks_before == [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


class _Concat(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.right = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.head = torch.nn.Conv2d(5, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.left(x), torch.relu(self.right(x))], dim=1)).mean((2, 3))


def test_concatenation_and_selected_layers():
    graph = trace_layers(_Concat(), torch.rand(2, 1, 6, 6))
    assert graph.inputs["head"] == ("left", "right")
    only = trace_layers(_Concat(), torch.rand(2, 1, 6, 6), layers=["left", "head"])
    assert only.layers == ("left", "head") and only.inputs["head"] == ("left",)
