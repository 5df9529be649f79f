"""The MobileNetV2 canonizer: same outputs, exact restoration, and conservative residual blocks."""

from __future__ import annotations

import copy

import pytest
import torch
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlus, LayerMapComposite
from zennit.layer import Sum
from zennit.rules import Epsilon, Norm, Pass
from zennit.types import Activation, AvgPool, BatchNorm, Linear

from glocal import Attributor, Condition
from glocal.lrp.canonizers import MobileNetV2Canonizer, MobileNetV2PoolCanonizer, MobileNetV2ResidualCanonizer

torchvision = pytest.importorskip("torchvision")
from torchvision.models.mobilenetv2 import InvertedResidual  # noqa: E402


def _randomise_batchnorm(model: torch.nn.Module, bias: tuple[float, float] = (-0.2, 0.2)) -> None:
    """Non-trivial batch norm statistics, so that merging them actually changes the convolutions."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(*bias)


def _positive_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Batch norm biases of 1 to 2, so that (nearly) every ReLU6 is active.

    The rules below leave biases out, so relevance is conserved wherever a layer's output without its bias is
    nonzero; a depthwise 3x3 convolution whose whole window is cut off by ReLU6 would swallow the relevance of its
    bias, and the tests would measure that. Where the output without bias is merely small, relevance is divided by
    it and the terms cancel, so these tests run in float64.
    """
    _randomise_batchnorm(model, bias=(1.0, 2.0))
    return model.double()


@pytest.fixture
def mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=5)
    _randomise_batchnorm(model)
    return model.eval()


@pytest.fixture
def block() -> torch.nn.Module:
    """One residual inverted-residual block (stride 1, 8 channels in and out), with its batch norms."""
    torch.manual_seed(3)
    module = InvertedResidual(8, 8, stride=1, expand_ratio=3)
    return _positive_batchnorm(module).eval()


def _epsilon_composite(canonizers: list) -> LayerMapComposite:
    """Rules that conserve relevance exactly where nothing absorbs it: epsilon without biases, norm on sums."""
    return LayerMapComposite(
        layer_map=[
            (Activation, Pass()),
            (Sum, Norm(stabilizer=1e-9)),
            (AvgPool, Norm(stabilizer=1e-9)),
            (BatchNorm, Pass()),
            (Linear, Epsilon(epsilon=1e-9, zero_params=["bias"])),
        ],
        canonizers=canonizers,
    )


def test_residual_blocks_get_a_sum_module_and_the_model_a_pooling_module(mobilenet):
    handles = MobileNetV2Canonizer().apply(mobilenet)
    try:
        added = sorted(name for name, _ in mobilenet.named_modules() if "canonizer" in name)
        residual = [
            f"features.{index}"
            for index, module in enumerate(mobilenet.features)
            if isinstance(module, InvertedResidual) and module.use_res_connect
        ]
        # torchvision's MobileNetV2 has 10 residual blocks: 3, 5, 6, 8, 9, 10, 12, 13, 15, 16
        assert [int(name.split(".")[1]) for name in residual] == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
        assert added == sorted([*(f"{name}.canonizer_sum" for name in residual), "canonizer_pool"])
        assert isinstance(mobilenet.canonizer_pool, torch.nn.AdaptiveAvgPool2d)
        # every batch norm follows a convolution, so every one is merged into the identity
        for module in mobilenet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
                assert torch.equal(module.weight, torch.ones_like(module.weight))
    finally:
        for handle in reversed(handles):
            handle.remove()


def test_canonized_model_computes_the_same_output(mobilenet):
    data = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = mobilenet(data)
        handles = MobileNetV2Canonizer().apply(mobilenet)
        try:
            canonized = mobilenet(data)
        finally:
            for handle in reversed(handles):
                handle.remove()
        restored = mobilenet(data)
    assert torch.allclose(canonized, expected, atol=1e-5, rtol=0)
    assert torch.equal(restored, expected)


def test_removal_restores_the_model_exactly(mobilenet):
    state = copy.deepcopy(mobilenet.state_dict())
    modules = dict(mobilenet.named_modules())
    handles = MobileNetV2Canonizer().apply(mobilenet)
    assert "forward" in vars(mobilenet) and "forward" in vars(mobilenet.features[3])
    for handle in reversed(handles):
        handle.remove()

    restored = mobilenet.state_dict()
    assert restored.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(restored[key], value), key
    assert dict(mobilenet.named_modules()).keys() == modules.keys()
    assert all(module is modules[name] for name, module in mobilenet.named_modules())
    # the instance-level forward overrides are gone, so the class methods are used again
    assert [name for name, module in mobilenet.named_modules() if "forward" in vars(module)] == []
    assert mobilenet.forward.__func__ is type(mobilenet).forward
    assert mobilenet.features[3].forward.__func__ is InvertedResidual.forward


def test_blocks_without_a_residual_connection_are_left_alone():
    block = InvertedResidual(8, 16, stride=1, expand_ratio=2).eval()
    assert MobileNetV2ResidualCanonizer().apply(block) == []
    assert MobileNetV2PoolCanonizer().apply(block) == []


def test_subclasses_with_their_own_forward_are_left_alone():
    class Doubled(InvertedResidual):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    assert MobileNetV2ResidualCanonizer().apply(Doubled(8, 8, stride=1, expand_ratio=2)) == []


def _block_relevance(model: torch.nn.Module, data: torch.Tensor, canonizers: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance at the output (the output itself) and at the input of ``model``, summed per sample."""
    with Gradient(model, _epsilon_composite(canonizers)) as attributor:
        output, relevance = attributor(data, lambda output: output)
    return output.flatten(1).sum(1), relevance.flatten(1).sum(1)


def test_relevance_is_conserved_through_a_residual_block(block):
    data = torch.randn(3, 8, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    canonizers = [SequentialMergeBatchNorm(), MobileNetV2ResidualCanonizer()]
    upper, lower = _block_relevance(block, data, canonizers)
    assert torch.allclose(lower, upper, rtol=1e-3, atol=1e-4)


def test_without_the_canonizer_the_residual_add_doubles_relevance(block):
    # Contrast to the test above: the plain gradient of ``x + conv(x)`` hands the full relevance to both summands,
    # so the input receives the output's relevance once through the skip and once more through the convolutions.
    data = torch.randn(3, 8, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    upper, lower = _block_relevance(block, data, [SequentialMergeBatchNorm()])
    assert torch.allclose(lower, 2 * upper, rtol=1e-3, atol=1e-4)


def test_glocal_conserves_relevance_through_a_canonized_block(block):
    # The same through glocal's engine, which applies the canonizer for the call and removes it afterwards.
    model = torch.nn.Sequential(block)
    data = torch.randn(3, 8, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    attributor = Attributor(model, _epsilon_composite([MobileNetV2Canonizer()]))
    result = attributor(data, Condition(), init_rel=lambda output: output, record=["0"])
    assert result.input_relevance is not None
    upper = result.relevances["0"].flatten(1).sum(1)
    lower = result.input_relevance.flatten(1).sum(1)
    assert torch.allclose(upper, block(data).flatten(1).sum(1))
    assert torch.allclose(lower, upper, rtol=1e-4, atol=1e-6)
    assert "forward" not in vars(block) and not hasattr(block, "canonizer_sum")


def test_composites_give_relu6_the_pass_rule():
    # MobileNetV2's activations are ReLU6; zennit counts them as activations, which its composites map to Pass.
    composite = EpsilonPlus()
    assert isinstance(torch.nn.ReLU6(), Activation)
    assert isinstance(composite.module_map({}, "relu6", torch.nn.ReLU6()), Pass)
