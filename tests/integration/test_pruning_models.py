"""Masked and physically pruned real models compute the same outputs, and the masks leave the models exactly as they
were: the MNIST CNN (conv -> flatten -> linear), the FashionMNIST model (a skip branch) and MobileNetV2 (depthwise
convs, residual adds)."""

from __future__ import annotations

import copy

import pytest
import torch

import fashion_mnist
from glocal.pruning import channel_scores, masked, prune_plan, pruned_copy
from real_models import mnist_cnn, mnist_digits, mobilenet_v2


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check(model: torch.nn.Module, inputs: torch.Tensor, layers: list[str], rate: float, criterion: str) -> None:
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        before = model(inputs)
    scores = channel_scores(model, inputs, layers, criterion=criterion, targets="prediction", progress=False)
    plan = prune_plan(scores, rate)
    small = pruned_copy(model, plan, inputs[:1])
    with masked(model, plan, inputs[:1]) as pruned, torch.no_grad():
        actual = pruned(inputs)
    with torch.no_grad():
        expected = small.model(inputs)
        after = model(inputs)
    scale = float(expected.abs().max())
    assert float((actual - expected).abs().max()) <= 1e-5 * max(scale, 1.0)
    assert not torch.allclose(actual, before, atol=1e-3)  # the plan did change the model's outputs
    assert torch.equal(after, before)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert small.parameters_after < small.parameters_before and small.flops_after < small.flops_before


def test_mnist_cnn():
    images, _ = mnist_digits(8)
    check(mnist_cnn(), images, ["conv_layers.0", "conv_layers.3", "conv_layers.6", "fc_layers.0"], 0.5, "relevance")


def test_fashion_mnist_skip_branch():
    if not fashion_mnist.available():
        pytest.skip("the FashionMNIST model and images are not available")
    model = fashion_mnist.load_model()
    check(model, fashion_mnist.load_images(8), ["conv1", "conv2", "parallel.0", "linear1"], 0.4, "taylor")


def test_mobilenet_v2_depthwise_and_residual():
    model = mobilenet_v2()
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, 64, 64)
    # an expansion conv inside a residual block, a depthwise conv, a block output that is added to a skip connection
    layers = ["features.3.conv.0.0", "features.5.conv.1.0", "features.3.conv.2", "features.17.conv.2"]
    check(model, inputs, layers, 0.3, "weight")
