"""The layer graph through skip connections, concatenations and functional ops, found by torch.fx and by autograd."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

from glocal.errors import GlocalWarning, InputError, LayerError
from glocal.structure.layer_graph import LayerGraph, block_layers, trace_layers

torchvision = pytest.importorskip("torchvision")

METHODS = ["fx", "autograd"]


class _Concat(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.right = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.head = torch.nn.Conv2d(5, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.left(x), torch.relu(self.right(x))], dim=1)).mean((2, 3))


class _InPlace(torch.nn.Module):
    """The second branch is added into the first one's output in place, then the shape feeds a view."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        self.c = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.a(x)
        out.add_(self.b(x))
        return self.c(out.view(x.shape[0], -1))


class _DataDependent(torch.nn.Module):
    """Python control flow on a tensor value: symbolic tracing cannot decide the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Linear(4, 4)
        self.positive = torch.nn.Linear(4, 2)
        self.negative = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.first(x)
        if hidden.sum() > 0:
            return self.positive(hidden)
        return self.negative(-hidden)


class _Reused(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.shared(torch.relu(self.shared(x))))


class _MyConv(torch.nn.Conv2d):
    """A conv class from outside torch.nn: torch.fx would trace into it unless it is a graph layer."""


class _Nested(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), _MyConv(2, 2, 3))
        self.head = torch.nn.Conv2d(2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def _seeded(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(0)
    return factory().eval()


@pytest.fixture(scope="module")
def vgg16() -> torch.nn.Module:
    return _seeded(lambda: torchvision.models.vgg16(weights=None))  # built once: its classifier is large


def _model_state(model: torch.nn.Module) -> list[Any]:
    """Everything about the model that tracing could leave changed: hooks, flags, attributes, parameters."""
    return [
        (
            name,
            len(module._forward_hooks),
            len(module._forward_pre_hooks),
            len(module._backward_hooks),
            module.training,
            sorted(vars(module)),
            [
                (key, p.requires_grad, p.grad is None, p.detach().clone())
                for key, p in module.named_parameters(recurse=False)
            ],
        )
        for name, module in model.named_modules()
    ]


def _assert_same_state(before: list[Any], after: list[Any]) -> None:
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        assert old[:6] == new[:6]
        for (key, grad_flag, no_grad, value), (key2, grad_flag2, no_grad2, value2) in zip(old[6], new[6], strict=True):
            assert (key, grad_flag, no_grad) == (key2, grad_flag2, no_grad2) and torch.equal(value, value2)


@pytest.mark.parametrize("method", METHODS)
def test_skip_branch_model(skip_net, method):
    graph = trace_layers(skip_net, torch.rand(1, 1, 16, 16), method=method)
    assert graph.method == method
    # forward order: conv1, conv2, then the parallel branch, then the head
    assert graph.layers == ("conv1", "conv2", "parallel.0", "linear1", "linear2")
    assert graph.inputs["conv1"] == () and graph.inputs["parallel.0"] == ()
    assert graph.inputs["conv2"] == ("conv1",)
    assert graph.inputs["linear1"] == ("conv2", "parallel.0")  # through zennit's Sum over torch.stack, the flatten
    assert graph.outputs("conv1") == ("conv2",)
    assert graph.upstream("linear2") == ("linear1", "conv2", "parallel.0", "conv1")


@pytest.mark.parametrize("method", METHODS)
def test_resnet_blocks_and_model_unchanged(method):
    model = _seeded(lambda: torchvision.models.resnet18(num_classes=3))
    before = _model_state(model)
    graph = trace_layers(model, torch.rand(1, 3, 32, 32), method=method)
    assert graph.inputs["layer1.0.conv1"] == ("conv1",)  # through bn, relu and max pooling
    assert graph.inputs["layer1.0.conv2"] == ("layer1.0.conv1",)
    # the second block sees the first block's output: its conv2 (main path) and the stem (identity skip)
    assert graph.inputs["layer1.1.conv1"] == ("conv1", "layer1.0.conv2")
    # a downsampling block: the 1x1 shortcut conv reads the previous block's output, in parallel to conv1
    assert (
        graph.inputs["layer2.0.downsample.0"]
        == graph.inputs["layer2.0.conv1"]
        == ("conv1", "layer1.0.conv2", "layer1.1.conv2")  # layer1 has identity skips only: the stem reaches too
    )
    assert graph.inputs["layer2.1.conv1"] == ("layer2.0.conv2", "layer2.0.downsample.0")
    assert graph.inputs["fc"] == ("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2")  # forward order
    _assert_same_state(before, _model_state(model))


@pytest.mark.parametrize("method", METHODS)
def test_concatenation_and_selected_layers(method):
    graph = trace_layers(_Concat(), torch.rand(2, 1, 6, 6), method=method)
    assert graph.inputs["head"] == ("left", "right")
    only = trace_layers(_Concat(), torch.rand(2, 1, 6, 6), layers=["left", "head"], method=method)
    assert only.layers == ("left", "head") and only.inputs["head"] == ("left",)


def _expect_vgg16(graph: LayerGraph) -> None:
    assert len(graph.layers) == 16 and graph.layers[0] == "features.0"
    assert graph.inputs["features.0"] == ()
    assert graph.inputs["features.2"] == ("features.0",)
    assert graph.inputs["features.5"] == ("features.2",)  # through a max pooling
    assert graph.inputs["classifier.0"] == ("features.28",)  # through pooling, adaptive pooling and the flatten
    assert graph.inputs["classifier.6"] == ("classifier.3",)  # through relu and dropout


def _expect_resnet18(graph: LayerGraph) -> None:
    assert graph.layers[:3] == ("conv1", "layer1.0.conv1", "layer1.0.conv2")
    assert graph.inputs["layer1.1.conv1"] == ("conv1", "layer1.0.conv2")
    assert graph.inputs["layer3.0.downsample.0"] == ("layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2")


def _expect_mobilenet_v2(graph: LayerGraph) -> None:
    assert graph.inputs["features.1.conv.0.0"] == ("features.0.0",)
    assert graph.inputs["features.2.conv.1.0"] == ("features.2.conv.0.0",)  # depthwise after the expansion
    # features.3 is residual (24 -> 24 channels, stride 1): its output is its projection plus its input, which is
    # the output of features.2 (not residual: stride 2)
    assert graph.inputs["features.3.conv.0.0"] == ("features.2.conv.2",)
    assert graph.inputs["features.4.conv.0.0"] == ("features.2.conv.2", "features.3.conv.2")
    # two residual blocks in a row (features.5, features.6) after a plain one (features.4)
    assert graph.inputs["features.7.conv.0.0"] == ("features.4.conv.2", "features.5.conv.2", "features.6.conv.2")
    assert graph.inputs["classifier.1"] == ("features.18.0",)


def _expect_skip(graph: LayerGraph) -> None:
    assert graph.inputs["linear1"] == ("conv2", "parallel.0")


def _expect_concat(graph: LayerGraph) -> None:
    assert graph.layers == ("left", "right", "head") and graph.inputs["head"] == ("left", "right")


def _skip_net(request: pytest.FixtureRequest) -> torch.nn.Module:
    model: torch.nn.Module = request.getfixturevalue("skip_net")
    return model


CASES = {
    "skip_net": (_skip_net, (1, 1, 16, 16), _expect_skip),
    "vgg16": (lambda request: request.getfixturevalue("vgg16"), (1, 3, 64, 64), _expect_vgg16),
    "resnet18": (
        lambda _: _seeded(lambda: torchvision.models.resnet18(weights=None)),
        (1, 3, 32, 32),
        _expect_resnet18,
    ),
    "mobilenet_v2": (
        lambda _: _seeded(lambda: torchvision.models.mobilenet_v2(weights=None)),
        (1, 3, 32, 32),
        _expect_mobilenet_v2,
    ),
    "concat": (lambda _: _seeded(_Concat), (2, 1, 6, 6), _expect_concat),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fx_and_autograd_agree(case, request):
    build, shape, expect = CASES[case]
    model = build(request)
    torch.manual_seed(1)
    by_autograd = trace_layers(model, torch.rand(shape), method="autograd")
    by_fx = trace_layers(model, method="fx")  # no example input
    assert (by_fx.method, by_autograd.method) == ("fx", "autograd")
    assert by_fx.layers == by_autograd.layers
    assert dict(by_fx.inputs) == dict(by_autograd.inputs)
    assert trace_layers(model, torch.rand(shape)).method == "fx"  # auto: fx where it works
    expect(by_fx)
    expect(by_autograd)


@pytest.mark.parametrize("method", METHODS)
def test_in_place_add_and_shape_reads(method):
    graph = trace_layers(_seeded(_InPlace), torch.rand(2, 4), method=method)
    # c reads a's output after b's was added into it in place; reading x.shape links nothing
    assert graph.inputs == {"a": (), "b": (), "c": ("a", "b")}


def test_auto_falls_back_to_autograd_on_data_dependent_control_flow(caplog):
    model = _seeded(_DataDependent)
    with caplog.at_level(logging.DEBUG, logger="glocal.structure.layer_graph"):
        graph = trace_layers(model, torch.rand(1, 4))
    assert graph.method == "autograd"
    assert "falling back to the autograd walk" in caplog.text
    branch = graph.layers[1]
    assert graph.layers == ("first", branch) and graph.inputs[branch] == ("first",)
    with pytest.raises(LayerError, match=r"could not trace _DataDependent.*method='autograd'") as error:
        trace_layers(model, method="fx")
    assert isinstance(error.value.__cause__, torch.fx.proxy.TraceError)


@pytest.mark.parametrize("method", ["auto", *METHODS])
def test_reused_module_is_named(method):
    model = _seeded(_Reused)
    before = _model_state(model)
    with pytest.raises(LayerError, match=r"layer 'shared' runs 2 times"):
        trace_layers(model, torch.rand(1, 4), method=method)
    # only the reused one is a problem, and only when it is in the graph
    assert trace_layers(model, torch.rand(1, 4), layers=["head"], method=method).layers == ("head",)
    _assert_same_state(before, _model_state(model))


@pytest.mark.parametrize("method", ["auto", *METHODS])
def test_layers_that_never_run_or_do_not_exist(method):
    model = _seeded(_DataDependent)
    with torch.no_grad():
        model.first.bias.fill_(10.0)  # the positive branch runs; negative never does
    example = torch.rand(1, 4)
    if method != "fx":  # symbolic tracing cannot take this model at all
        with pytest.raises(LayerError, match=r"'negative' never ran"):
            trace_layers(model, example, layers=["first", "negative"], method=method)
        # by type, a module that does not run is left out
        assert trace_layers(model, example, method=method).layers == ("first", "positive")
    with pytest.raises(LayerError, match=r"no layer named 'frist'.*Did you mean 'first'"):
        trace_layers(model, example, layers=["frist"], method=method)
    with pytest.raises(LayerError, match=r"\['first'\]"):
        trace_layers(model, example, layers="first", method=method)  # type: ignore[arg-type]


def test_unused_module_by_fx():
    model = _seeded(_Concat)
    model.spare = torch.nn.Linear(2, 2)  # defined, never called
    assert trace_layers(model, method="fx").layers == ("left", "right", "head")
    with pytest.raises(LayerError, match=r"'spare' never ran \(fx\)"):
        trace_layers(model, layers=["head", "spare"], method="fx")


def test_custom_layer_class_and_nested_layers():
    model = _seeded(_Nested)
    example = torch.rand(1, 1, 8, 8)
    by_fx = trace_layers(model, method="fx")
    assert by_fx.layers == ("block.0", "block.2", "head")  # _MyConv is one node although it is not from torch.nn
    by_autograd = trace_layers(model, example, method="autograd")
    assert by_autograd.layers == by_fx.layers and dict(by_autograd.inputs) == dict(by_fx.inputs)
    nested = ["block", "block.2", "head"]
    with pytest.raises(LayerError, match=r"'block.2' lies inside layer 'block'.*method='autograd'"):
        trace_layers(model, layers=nested, method="fx")
    graph = trace_layers(model, example, layers=nested)  # auto: the autograd walk handles it
    assert graph.method == "autograd"
    assert graph.layers == ("block.2", "block", "head")  # a container's hook fires after its children
    assert graph.inputs["head"] == ("block",)


@pytest.mark.parametrize("method", METHODS)
def test_model_left_unchanged(skip_net, method):
    skip_net.train()
    skip_net.parallel.eval()  # mixed flags must come back exactly
    skip_net.conv1.weight.requires_grad_(False)
    before = _model_state(skip_net)
    with warnings.catch_warnings():
        # the forward pass of the autograd walk warns about batch norm in training mode; fx runs nothing
        warnings.simplefilter("ignore" if method == "autograd" else "error", GlocalWarning)
        graph = trace_layers(skip_net, torch.rand(1, 1, 16, 16), method=method)
    assert graph.inputs["linear1"] == ("conv2", "parallel.0")
    _assert_same_state(before, _model_state(skip_net))


def test_example_and_method_checks(skip_net):
    with pytest.raises(InputError, match=r"method='auto' needs an example input.*method='fx'"):
        trace_layers(skip_net)
    with pytest.raises(InputError, match=r"method='autograd' needs an example input"):
        trace_layers(skip_net, None, method="autograd")
    with pytest.raises(ValueError, match=r"method must be one of 'auto', 'fx', 'autograd', got 'jit'"):
        trace_layers(skip_net, torch.rand(1, 1, 16, 16), method="jit")  # type: ignore[arg-type]
    assert LayerGraph(("a",), {"a": ()}).method == "autograd"  # the field has a default


# -- the outputs of blocks --------------------------------------------------------------------------------------------


class _Residual(torch.nn.Module):
    """A residual block of a class glocal does not know by name: ``relu(x + conv(relu(conv(x))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.second = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.second(torch.relu(self.first(x))))


class _Plain(torch.nn.Module):
    """Same shape as a block, no residual sum: not a block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) * 2


class _Stages(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.stage = torch.nn.Sequential(_Residual(4), _Residual(4))  # nested: the stage holds two blocks
        self.plain = _Plain(4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.plain(self.stage(self.stem(x))).mean((2, 3)))


def test_block_layers_of_resnet_and_mobilenet():
    resnet = torchvision.models.resnet18()
    assert block_layers(resnet) == ["conv1", *(f"layer{i}.{j}" for i in range(1, 5) for j in range(2)), "fc"]
    mobilenet = torchvision.models.mobilenet_v2()
    # every InvertedResidual block, with or without its skip connection; the stem and head convs and the classifier
    expected = ["features.0.0", *(f"features.{i}" for i in range(1, 18)), "features.18.0", "classifier.1"]
    assert block_layers(mobilenet) == expected


@pytest.mark.parametrize("method", METHODS)
def test_block_graph_of_a_residual_model_is_a_chain(method):
    model = torchvision.models.mobilenet_v2().eval()
    graph = trace_layers(model, torch.rand(1, 3, 64, 64), granularity="blocks", method=method)
    layers = block_layers(model)
    assert graph.layers == tuple(layers)
    assert dict(graph.inputs) == {name: tuple(layers[i - 1 : i]) for i, name in enumerate(layers)}
    # the conv graph of the same model: residual blocks' projection convs are fed by up to three earlier ones
    convs = trace_layers(model, torch.rand(1, 3, 64, 64), method=method)
    assert set(convs.inputs["features.10.conv.0.0"]) == {"features.9.conv.2", "features.8.conv.2", "features.7.conv.2"}


def test_blocks_found_by_their_residual_sum():
    model = _Stages().eval()
    assert block_layers(model) == ["stem", "stage.0", "stage.1", "plain.conv", "head"]
    graph = trace_layers(model, torch.rand(1, 1, 6, 6), granularity="blocks")
    assert dict(graph.inputs) == {
        "stem": (),
        "stage.0": ("stem",),
        "stage.1": ("stage.0",),
        "plain.conv": ("stage.1",),
        "head": ("plain.conv",),
    }


def test_granularity_checks():
    with pytest.raises(ValueError, match="granularity"):
        trace_layers(_Stages(), torch.rand(1, 1, 6, 6), granularity="modules")
    with pytest.raises(LayerError, match="pass one of the two"):
        trace_layers(_Stages(), torch.rand(1, 1, 6, 6), layers=["stem"], granularity="blocks")
