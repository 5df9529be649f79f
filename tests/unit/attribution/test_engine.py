"""The engine against hand-worked numbers, zennit's own LRP, and the properties CRP must have."""

from __future__ import annotations

import pytest
import torch
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    GuidedBackprop,
    LayerMapComposite,
    NameMapComposite,
)
from zennit.rules import Epsilon, ZPlus

from glocal import Attributor, Condition, PerSample
from glocal.attribution.rules import BasicRuleStep
from glocal.errors import ConditionError


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-12))


def zennit_heatmap(model, composite, data, target):
    """Plain LRP with zennit's own attributor: the reference for unconditional heatmaps."""
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(data, lambda out: torch.eye(out.shape[1])[[target] * out.shape[0]] * out)
    return relevance


# -- a hand-worked oracle -------------------------------------------------------------------------------------------


@pytest.fixture
def two_layer():
    """x (2) -> Linear W1 (no bias) -> ReLU -> Linear W2 (no bias) -> y (1)."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(), torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
    composite = NameMapComposite([(("0",), ZPlus()), (("2",), Epsilon(epsilon=1e-9))])
    return model.eval(), composite


def test_hand_computed_two_layer_oracle(two_layer):
    model, composite = two_layer
    x = torch.tensor([[1.0, 1.0]])
    # Forward: h = W1 x = [1 + 2, 3 - 1] = [3, 2]; ReLU keeps both; y = h0 + h1 = 5.
    # Output relevance R_y = y = 5 (target 0).
    # Layer "2", LRP-epsilon (~LRP-0): R_h_j = h_j * W2_j * R_y / y = h_j  ->  R_h = [3, 2].
    # Layer "0", z+: R_x_i = sum_j x_i W1+_ji / (sum_i' x_i' W1+_ji') * R_h_j
    #   j = 0: W1+ row [1, 2], z = 3 -> shares [1/3, 2/3] of R_h0 = 3 -> [1, 2]
    #   j = 1: W1+ row [3, 0], z = 3 -> shares [1, 0]     of R_h1 = 2 -> [2, 0]
    # Unconditional R_x = [3, 2]; conditioned on channel 0 of "0": [1, 2]; on channel 1: [2, 0].
    result = Attributor(model, composite)(
        x, [{"y": [0]}, {"0": [0], "y": [0]}, {"0": [1], "y": [0]}, {"0": [], "y": [0]}], record=["0"]
    )
    expected = torch.tensor([[3.0, 2.0], [1.0, 2.0], [2.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(result.input_relevance, expected, atol=1e-5, rtol=1e-5)
    # relevance arriving at layer "0" is [3, 2] under every condition (the mask acts below it)
    torch.testing.assert_close(result.relevances["0"], torch.tensor([[3.0, 2.0]] * 4), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.prediction, torch.tensor([[5.0]]))
    torch.testing.assert_close(result.activations["0"], torch.tensor([[3.0, 2.0]]))


def test_start_layer_and_init_rel_oracle(two_layer):
    model, composite = two_layer
    x = torch.tensor([[1.0, 1.0]])
    # Start at layer "0" with its activation [3, 2] as relevance, channel 1 only: R = [0, 2] -> R_x = [2, 0].
    result = Attributor(model, composite)(x, {"0": [1]}, start_layer="0")
    torch.testing.assert_close(result.input_relevance, torch.tensor([[2.0, 0.0]]), atol=1e-5, rtol=1e-5)
    # init_rel as a scalar: the output relevance is 10 instead of y = 5, so everything doubles.
    doubled = Attributor(model, composite)(x, {"y": [0]}, init_rel=10.0)
    torch.testing.assert_close(doubled.input_relevance, torch.tensor([[6.0, 4.0]]), atol=1e-5, rtol=1e-5)
    by_callable = Attributor(model, composite)(x, {"y": [0]}, init_rel=lambda out: 2 * out)
    torch.testing.assert_close(by_callable.input_relevance, doubled.input_relevance)


# -- agreement with zennit's own LRP --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_composite",
    [
        lambda: EpsilonPlusFlat(),
        lambda: EpsilonAlpha2Beta1(),
        lambda: EpsilonGammaBox(low=0.0, high=1.0),
        lambda: GuidedBackprop(),  # not a BasicHook rule: falls back to zennit's hook
    ],
    ids=["epsilon-plus-flat", "alpha2-beta1", "gamma-box", "guided-backprop"],
)
def test_unconditional_heatmap_equals_zennit(conv_net, images, make_composite):
    expected = zennit_heatmap(conv_net, make_composite(), images, target=2)
    result = Attributor(conv_net, make_composite())(images, {"y": [2]})
    assert relative_error(result.input_relevance, expected) < 1e-5


def test_unconditional_heatmap_equals_zennit_with_canonizer(skip_net, digits):
    def composite():
        return EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])

    expected = zennit_heatmap(skip_net, composite(), digits, target=1)
    result = Attributor(skip_net, composite())(digits, {"y": [1]})
    assert relative_error(result.input_relevance, expected) < 1e-5


# -- CRP properties -------------------------------------------------------------------------------------------------


def test_completeness_sequential(conv_net, images):
    """The conditional heatmaps of all channels of a layer add up to the unconditional heatmap."""
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    plain = attributor(images, {"y": [1]})
    per_channel = attributor(images, [{"2": [c], "y": [1]} for c in range(8)])
    total = per_channel.grid(per_channel.heatmap).sum(1)
    assert relative_error(total, plain.heatmap) < 1e-5


@pytest.mark.parametrize("layer", ["conv2", "parallel.0", "linear1"])
def test_completeness_around_skip_connection(skip_net, digits, layer):
    """With relevance allowed around the layer (sole_path=False) completeness holds on any layer."""
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    plain = attributor(digits, {"y": [0]})
    count = {"conv2": 4, "parallel.0": 4, "linear1": 8}[layer]
    conditional = attributor(digits, [{layer: [c], "y": [0]} for c in range(count)], sole_path=False)
    blocked = attributor(digits, {layer: [], "y": [0]}, sole_path=False)
    # all channels plus what bypasses the layer gives the plain heatmap ...
    total = conditional.grid(conditional.heatmap).sum(1) - (count - 1) * blocked.heatmap
    assert relative_error(total, plain.heatmap) < 1e-5
    # ... and with sole_path=True the channels add up to the relevance that goes through the layer only
    sole = attributor(digits, [{layer: [c], "y": [0]} for c in range(count)], sole_path=True)
    through = sole.grid(sole.heatmap).sum(1)
    assert relative_error(through + blocked.heatmap, plain.heatmap) < 1e-5


def test_conservation_with_epsilon_rules():
    """Bias-free layers with epsilon -> 0: input relevance sums to the output relevance, per concept too."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 5, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(5, 4, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(4, 3, bias=False),
    ).eval()
    composite = LayerMapComposite([(torch.nn.Linear, Epsilon(epsilon=1e-9))])
    data = torch.rand(4, 6)
    attributor = Attributor(model, composite)
    result = attributor(data, [{"y": [2]}] + [{"2": [c], "y": [2]} for c in range(4)], record=["2"])
    output = result.prediction[:, 2]
    grid_input = result.grid(result.input_relevance)
    torch.testing.assert_close(grid_input[:, 0].sum(1), output, rtol=1e-4, atol=1e-6)
    # each concept's heatmap carries exactly the relevance the concept received at the layer
    concept_relevance = result.grid(result.relevances["2"])[:, 0]  # (N, 4)
    torch.testing.assert_close(grid_input[:, 1:].sum(-1), concept_relevance, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(concept_relevance.sum(1), output, rtol=1e-4, atol=1e-6)


def test_sample_major_order_independent_of_condition_contents(conv_net, images):
    """N samples x M conditions: row n*M + m, whatever keys the conditions have."""
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    conditions = [{"5": [1], "y": [0]}, {"y": [3]}, {"2": [4], "5": [0], "y": [1]}, {"2": [2], "y": [0]}]
    together = attributor(images, conditions, record=["5"])
    for n in range(images.shape[0]):
        for m, condition in enumerate(conditions):
            alone = attributor(images[n : n + 1], condition, record=["5"])
            row = together.row(n, m)
            # batched and single-sample convolutions round differently; tiny magnitudes here (1e-8)
            assert relative_error(together.heatmap[row], alone.heatmap[0]) < 1e-4
            assert relative_error(together.relevances["5"][row], alone.relevances["5"][0]) < 1e-4


def test_layer_order_given_by_user_does_not_matter(conv_net, images):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    one = attributor(images, {"2": [3], "5": [1], "y": [0]})
    other = attributor(images, {"5": [1], "y": [0], "2": [3]})
    torch.testing.assert_close(one.heatmap, other.heatmap)


def test_multilayer_sole_path_equals_stagewise_reference(conv_net, images):
    """Two conditioned layers, sole path: R at layer 5 masked, pushed to layer 2, masked, pushed to the input."""
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    result = attributor(images, {"5": [3, 4], "2": [1, 3, 5], "y": [4]})
    # reference: plain autograd through zennit's own hooks, masking by hand
    composite = EpsilonPlusFlat()
    store = {}
    x = images.clone().requires_grad_(True)
    with composite.context(conv_net):
        hooks = [
            conv_net[i].register_forward_hook(lambda m, a, o, i=i: (store.__setitem__(i, o), o.clone())[1])
            for i in (2, 5)
        ]
        try:
            y = conv_net(x)
            r5 = torch.autograd.grad(y, store[5], torch.eye(5)[[4] * 3] * y, retain_graph=True)[0]
            mask5 = torch.zeros_like(r5)
            mask5[:, [3, 4]] = 1
            r2 = torch.autograd.grad(store[5], store[2], r5 * mask5, retain_graph=True)[0]
            mask2 = torch.zeros_like(r2)
            mask2[:, [1, 3, 5]] = 1
            expected = torch.autograd.grad(store[2], x, r2 * mask2)[0].sum(1)
        finally:
            for hook in hooks:
                hook.remove()
    assert expected.abs().max() > 0
    assert relative_error(result.heatmap, expected) < 1e-5


def test_per_sample_concepts_and_targets(conv_net, images):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    condition = Condition(targets=PerSample([[0], [3], [1, 2]]), layers={"5": PerSample([[1], [0, 4], []])})
    together = attributor(images, condition)
    expected = [({"5": [1], "y": [0]}), ({"5": [0, 4], "y": [3]}), ({"5": [], "y": [1, 2]})]
    for n, single in enumerate(expected):
        alone = attributor(images[n : n + 1], single)
        torch.testing.assert_close(together.heatmap[n], alone.heatmap[0])


def test_iterate_in_chunks_equals_one_call(conv_net, images):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    conditions = [{"5": [c], "y": [1]} for c in range(8)]
    whole = attributor(images[:2], conditions)
    chunks = list(attributor.iterate(images[:2], conditions, chunk_size=3))
    assert [chunk.n_conditions for chunk in chunks] == [3, 3, 2]
    stitched = torch.cat([chunk.grid(chunk.heatmap) for chunk in chunks], dim=1)
    torch.testing.assert_close(stitched, whole.grid(whole.heatmap))


def test_latent_only_stops_early_and_matches(conv_net, images):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    full = attributor(images, [{"5": [c], "y": [1]} for c in range(3)], record=["2"])
    latent = attributor(images, [{"5": [c], "y": [1]} for c in range(3)], record=["2"], heatmap=False)
    assert latent.heatmap is None and latent.input_relevance is None
    torch.testing.assert_close(latent.relevances["2"], full.relevances["2"])


@pytest.mark.parametrize("frozen", [False, True])
def test_without_input_grad_first_layers_skip_their_rule_and_match(skip_net, digits, frozen):
    """input_grad=False: relevance at every layer is unchanged, also for a first layer that starts the graph."""
    if frozen:
        for parameter in skip_net.parameters():
            parameter.requires_grad_(False)
    layers = ["conv1", "conv2", "parallel.0", "linear1"]
    condition = Condition(targets=PerSample([[1], [2]]), layers={"linear1": [3]})
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    full = attributor(digits[:2], condition, record=layers, heatmap=False)
    rule_calls = []
    with attributor.attached(layers) as start:
        original = BasicRuleStep.__init__

        def counting(self, hook, module, input, output, *rest):
            rule_calls.append(module)
            original(self, hook, module, input, output, *rest)

        BasicRuleStep.__init__ = counting
        try:
            run = start(digits[:2], record=layers, heatmap=False, input_grad=False)
        finally:
            BasicRuleStep.__init__ = original
        latent = run.attribute(condition)
        with pytest.raises(ConditionError, match="input_grad=True"):
            run.region_relevance("conv2", torch.ones(16, 16), {"y": [1]})
        with pytest.raises(ConditionError, match="needs input_grad=True"):
            start(digits[:2], heatmap=True, input_grad=False)
    for layer in layers:
        torch.testing.assert_close(latent.relevances[layer], full.relevances[layer])
    # the two layers fed by the input run without their rule
    assert skip_net.conv1 not in rule_calls and skip_net.parallel[0] not in rule_calls
    assert skip_net.conv2 in rule_calls
    assert all(p.grad is None for p in skip_net.parameters())


def test_record_and_heatmap_overridden_per_call(conv_net, images):
    conditions = [{"5": [c], "y": [1]} for c in range(3)]
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    with attributor.session(images, record=["0", "2"], layers=["5"]) as run:
        full = run.attribute(conditions)
        only = run.attribute(conditions, record=["2"], heatmap=False)
        again = run.attribute(conditions)
        with pytest.raises(ConditionError, match="were not named"):
            run.attribute(conditions, record=["3"])
    assert only.heatmap is None and set(only.relevances) == {"2"}
    torch.testing.assert_close(only.relevances["2"], full.relevances["2"])
    assert again.heatmap is not None and set(again.relevances) == {"0", "2"}
    torch.testing.assert_close(again.heatmap, full.heatmap)


class _UnusualConvs(torch.nn.Module):
    """Convolutions the direct transpose path handles (1d with dilation, 3d with strides, groups) and those that fall
    back to autograd (string padding, reflect padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv1d(2, 4, 5, stride=2, dilation=2, padding=3)
        self.b = torch.nn.Conv2d(1, 3, 3, padding="same")
        self.c = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.d = torch.nn.Conv3d(1, 2, 3, stride=(1, 2, 2), padding=1)
        self.e = torch.nn.Conv2d(4, 4, 3, groups=2, padding=1, bias=False)
        self.fc = torch.nn.Linear(332, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.relu(self.a(x[:, :2, 0, :12])).flatten(1)
        v = torch.relu(self.e(torch.relu(self.c(torch.relu(self.b(x[:, :1])))))).flatten(1)
        cube = x[:, :1, None, :4, :8].expand(-1, -1, 4, -1, -1).reshape(-1, 1, 4, 4, 8)
        w = torch.relu(self.d(cube)).flatten(1)
        return self.fc(torch.cat([u, v, w], 1))


def _zennit_heatmap(model, x, composite, target):
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(
            x, lambda out: torch.nn.functional.one_hot(torch.full((x.shape[0],), target), out.shape[1]) * out
        )
    return relevance


@pytest.mark.parametrize("case", ["mobilenet_v2", "resnet18", "unusual convolutions"])
def test_input_relevance_equals_zennit_on_real_architectures(case):
    """Each layer type's relevance step (kept modified weights and their transpose, or autograd) equals zennit."""
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox

    torch.manual_seed(0)
    if case == "unusual convolutions":
        model, x = _UnusualConvs().eval(), torch.rand(2, 3, 8, 8)
        make = [EpsilonPlusFlat, EpsilonAlpha2Beta1]
    else:
        torchvision = pytest.importorskip("torchvision")
        model = getattr(torchvision.models, case)(num_classes=5).eval()
        x = torch.randn(2, 3, 48, 48)
        if case == "mobilenet_v2":
            from glocal.lrp.canonizers import MobileNetV2Canonizer

            make = [lambda: EpsilonGammaBox(low=-3.0, high=3.0, canonizers=[MobileNetV2Canonizer()])]
        else:
            from zennit.torchvision import ResNetCanonizer

            make = [lambda: EpsilonAlpha2Beta1(canonizers=[ResNetCanonizer()])]
    for composite in make:
        expected = _zennit_heatmap(model, x, composite(), target=1)
        ours = Attributor(model, composite())(x, {"y": [1]}).input_relevance
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


@pytest.mark.parametrize("sole_path", [True, False])
def test_region_relevance_of_several_layers_equals_one_at_a_time(skip_net, digits, sole_path):
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    region = torch.zeros(16, 16)
    region[4:12, 2:10] = 1.0
    layers = ["conv1", "conv2", "parallel.0"]
    for condition in ({"y": [1]}, Condition(targets=PerSample([[0], [2], [1]]), layers={"linear1": [3, 5]})):
        with attributor.session(digits, layers=[*layers, "linear1"], sole_path=sole_path) as run:
            together = run.region_relevance(layers, region, condition)
            assert list(together) == layers
            for layer in layers:
                alone = run.region_relevance(layer, region, condition)
                torch.testing.assert_close(together[layer], alone, rtol=1e-5, atol=1e-7)


def test_a_finished_run_is_freed_without_the_garbage_collector(conv_net, images):
    # a run holds the forward pass's activations and autograd graph; a reference cycle through it would keep them
    # until the cyclic garbage collector happens to run, which large tensors do not trigger (a part graph on 32
    # images of 224 x 224 grew past 24 GB that way). Reference counting alone must free it.
    import gc
    import weakref

    attributor = Attributor(conv_net, EpsilonPlus())
    gc.collect()
    gc.disable()
    try:
        with attributor.attached(["2"]) as start:
            run = start(images, record=["2"])
            result = run.attribute(Condition(targets=0, layers={"2": (1,)}))
            assert result.heatmap is not None
            alive = weakref.ref(run)
            del run, result
            assert alive() is None
    finally:
        gc.enable()
