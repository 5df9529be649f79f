"""Bias-free LRP rules: hand-worked numbers, slow reference implementations, zennit and glocal's engine agreeing,
and conservation on the real MobileNetV2."""

from __future__ import annotations

import pickle

import pytest
import torch
import zennit.core
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite
from zennit.rules import Gamma, Pass

from glocal import Attributor
from glocal.lrp.bias_rules import BiasFreeGamma, BiasFreeZBox, BiasFreeZPlus, mobilenet_v2_composite
from real_models import mobilenet_v2, photos

ZENNIT_05 = hasattr(zennit.core, "ParamMod")  # zennit >= 0.5 (generalised Gamma, zero_params)


def zennit_relevance(model: torch.nn.Module, composite, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    with Gradient(model, composite) as attributor:
        return attributor(x, relevance)[1]


def glocal_relevance(model: torch.nn.Module, composite, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    return Attributor(model, composite)(x, {}, init_rel=relevance).input_relevance


def linear(weight: list[list[float]], bias: list[float]) -> torch.nn.Linear:
    layer = torch.nn.Linear(len(weight[0]), len(weight)).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer.eval()


# -- slow, obvious references: one loop over outputs and inputs, contributions z_ij = x_i w_ij ----------------------


def reference(contribution, x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """``R_i = sum_j c_ij / sum_i' c_i'j * R_j`` for one sample, with ``c_ij = contribution(i, j, z_j)``."""
    result = torch.zeros_like(x)
    for j in range(weight.shape[0]):
        z_j = sum(float(x[i] * weight[j, i]) for i in range(len(x)))
        shares = [contribution(i, j, z_j) for i in range(len(x))]
        total = sum(shares)
        for i in range(len(x)):
            result[i] += shares[i] / total * relevance[j]
    return result


def gamma_reference(x, weight, relevance, gamma):
    def contribution(i, j, z_j):
        z_ij = float(x[i] * weight[j, i])
        return z_ij + gamma * (max(z_ij, 0.0) if z_j >= 0 else min(z_ij, 0.0))

    return reference(contribution, x, weight, relevance)


def zplus_reference(x, weight, relevance):
    return reference(lambda i, j, z_j: max(float(x[i] * weight[j, i]), 0.0), x, weight, relevance)


def zbox_reference(x, weight, relevance, low, high):
    def contribution(i, j, z_j):
        w = float(weight[j, i])
        return float(x[i]) * w - float(low[i]) * max(w, 0.0) - float(high[i]) * min(w, 0.0)

    return reference(contribution, x, weight, relevance)


# -- hand-worked numbers ---------------------------------------------------------------------------------------------


def test_hand_worked_gamma_both_branches():
    # x = [1, 2]; bias 5 on both outputs, which the rule ignores.
    # output 0: w = [1, -1]  -> z = 1 - 2 = -1 < 0: negative branch, c_i = z_i + gamma * min(z_i, 0), gamma = 1
    #           c = [1, -2 - 2] = [1, -4], sum -3; R_0 = 3 -> R_i = c_i / -3 * 3 = [-1, 4]
    # output 1: w = [2, 1]   -> z = 2 + 2 = 4 >= 0: positive branch, c = [2 + 2, 2 + 2] = [4, 4]; R_1 = 1 -> [0.5, 0.5]
    # R_in = [-0.5, 4.5], sum 4 = R_0 + R_1: nothing absorbed by the biases (z with bias is [4, 9]).
    layer = linear([[1.0, -1.0], [2.0, 1.0]], [5.0, 5.0])
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    relevance = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    composite = LayerMapComposite([(torch.nn.Linear, BiasFreeGamma(gamma=1.0, stabilizer=1e-12))])
    expected = torch.tensor([[-0.5, 4.5]], dtype=torch.float64)
    torch.testing.assert_close(zennit_relevance(layer, composite, x, relevance), expected)
    torch.testing.assert_close(glocal_relevance(layer, composite, x, relevance), expected)


def test_hand_worked_zbox_without_bias():
    # x = [0.5, 0], bounds [0, 1] x [-1, 1]; w = [2, -1], bias -10 (ignored).
    # c_i = x_i w_i - l_i w_i+ - h_i w_i-: c_0 = 1 - 0 - 0 = 1, c_1 = 0 - 0 - 1 * (-1) = 1; R = 4 -> [2, 2]
    layer = linear([[2.0, -1.0]], [-10.0])
    x = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    low, high = torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0])
    composite = LayerMapComposite([(torch.nn.Linear, BiasFreeZBox(low, high, stabilizer=1e-12))])
    expected = torch.tensor([[2.0, 2.0]], dtype=torch.float64)
    relevance = torch.tensor([[4.0]], dtype=torch.float64)
    torch.testing.assert_close(zennit_relevance(layer, composite, x, relevance), expected)
    torch.testing.assert_close(glocal_relevance(layer, composite, x, relevance), expected)


# -- against the references, through zennit and through glocal's engine ----------------------------------------------


@pytest.mark.parametrize("rule", ["gamma", "zplus", "zbox"])
def test_rules_match_slow_reference(rule):
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 5).double().eval()
    with torch.no_grad():
        layer.bias.mul_(10)  # large biases: a rule that used them would be far off
    x = torch.randn(1, 6, dtype=torch.float64)
    relevance = torch.randn(1, 5, dtype=torch.float64)
    low, high = torch.full((6,), -3.0), torch.full((6,), 3.0)
    weight = layer.weight.detach()
    hooks = {
        "gamma": (BiasFreeGamma(gamma=0.5, stabilizer=1e-12), gamma_reference(x[0], weight, relevance[0], 0.5)),
        "zplus": (BiasFreeZPlus(stabilizer=1e-12), zplus_reference(x[0], weight, relevance[0])),
        "zbox": (BiasFreeZBox(low, high, stabilizer=1e-12), zbox_reference(x[0], weight, relevance[0], low, high)),
    }
    hook, expected = hooks[rule]
    composite = LayerMapComposite([(torch.nn.Linear, hook)])
    torch.testing.assert_close(zennit_relevance(layer, composite, x, relevance)[0], expected)
    torch.testing.assert_close(glocal_relevance(layer, composite, x, relevance)[0], expected)


def test_sample_bounds_are_each_samples_channel_extremes():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(2, 3, 3).double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    relevance = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    per_sample = LayerMapComposite([(torch.nn.Conv2d, BiasFreeZBox(stabilizer=1e-12))])
    result = zennit_relevance(conv, per_sample, x, relevance)
    for n in range(2):
        low, high = x[n].amin(dim=(1, 2), keepdim=True), x[n].amax(dim=(1, 2), keepdim=True)
        fixed = LayerMapComposite([(torch.nn.Conv2d, BiasFreeZBox(low, high, stabilizer=1e-12))])
        torch.testing.assert_close(result[n : n + 1], zennit_relevance(conv, fixed, x[n : n + 1], relevance[n : n + 1]))


@pytest.mark.parametrize("flat_fallback", [False, True])
def test_conv_network_engines_agree_and_fallback_conserves(flat_fallback):
    """Signed inputs, large biases, a depthwise conv after a ReLU (so some neurons see only zeros)."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1),
    ).double().eval()  # fmt: skip
    with torch.no_grad():
        for module in model:
            if isinstance(module, torch.nn.Conv2d):
                module.bias.normal_(0, 1)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    rule = BiasFreeGamma(0.25, 1e-12, flat_fallback=flat_fallback)  # a tiny stabiliser: exact in float64
    composite = LayerMapComposite([(torch.nn.Conv2d, rule), (torch.nn.ReLU, Pass())])
    with torch.no_grad():
        relevance = model(x)
    ours = glocal_relevance(model, composite, x, relevance)
    torch.testing.assert_close(ours, zennit_relevance(model, composite, x, relevance))
    kept = ours.sum((1, 2, 3)) / relevance.sum((1, 2, 3))
    if flat_fallback:  # every neuron hands on all of its relevance
        torch.testing.assert_close(kept, torch.ones(2, dtype=torch.float64), rtol=1e-6, atol=0)
    else:  # the depthwise neurons fed only zeros keep theirs
        assert float((kept - 1).abs().max()) > 1e-3


@pytest.mark.skipif(not ZENNIT_05, reason="zennit < 0.5 has only the Gamma rule for positive inputs")
def test_equals_zennit_gamma_on_a_layer_without_bias():
    torch.manual_seed(3)
    layer = torch.nn.Linear(7, 4, bias=False).double().eval()
    x, relevance = torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    ours = zennit_relevance(layer, LayerMapComposite([(torch.nn.Linear, BiasFreeGamma(0.3))]), x, relevance)
    theirs = zennit_relevance(layer, LayerMapComposite([(torch.nn.Linear, Gamma(0.3))]), x, relevance)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.skipif(not ZENNIT_05, reason="zero_params needs zennit >= 0.5")
def test_branch_by_the_bias_free_sign_avoids_zennits_cancellation():
    # w = [1, -1.25], x = [1, 1], bias 1: z = 0.75 > 0 picks zennit's positive branch, whose bias-free denominator is
    # x.w + gamma * x.w+ = -0.25 + 0.25 * 1 = 0: relevance explodes. Bias-free, x.w = -0.25 < 0 picks the negative
    # branch: denominator -0.25 + 0.25 * (-1.25) = -0.5625; c = [1, -1.25 - 0.3125]; R = 1 -> [-1.7778, 2.7778].
    layer = linear([[1.0, -1.25]], [1.0])
    x, relevance = torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    zennit_rule = LayerMapComposite([(torch.nn.Linear, Gamma(0.25, zero_params=["bias"]))])
    assert float(zennit_relevance(layer, zennit_rule, x, relevance).abs().max()) > 1e4
    ours = zennit_relevance(layer, LayerMapComposite([(torch.nn.Linear, BiasFreeGamma(0.25, 1e-12))]), x, relevance)
    torch.testing.assert_close(ours, torch.tensor([[1 / -0.5625, -1.5625 / -0.5625]], dtype=torch.float64))


def test_rules_pickle_and_copy():
    for rule in (BiasFreeGamma(0.5), BiasFreeGamma(flat_fallback=True), BiasFreeZPlus(), BiasFreeZBox(-1.0, 1.0)):
        for clone in (pickle.loads(pickle.dumps(rule)), rule.copy()):
            assert type(clone) is type(rule)
            assert len(clone.param_modifiers) == len(rule.param_modifiers)


# -- the real MobileNetV2 --------------------------------------------------------------------------------------------


def _bounds() -> tuple[torch.Tensor, torch.Tensor]:
    from glocal.demo import normalise

    return normalise(torch.zeros(1, 3, 1, 1)), normalise(torch.ones(1, 3, 1, 1))


def test_mobilenet_v2_default_conserves_and_engines_agree():
    """The real MobileNetV2 on a real photo. Measured with benchmarks/conservation.py (five photos): the input keeps
    99.6-99.9 % of the logit with the default (the classifier's bias keeps the rest), 0.1-0.7 % with EpsilonGammaBox
    (not repeated here: a MobileNetV2 pass is slow). glocal's engine and zennit agree."""
    model, image = mobilenet_v2(), photos(("chelsea",))
    low, high = _bounds()
    with torch.no_grad():
        logits = model(image)
    target = int(logits.argmax())
    logit = float(logits[0, target])
    after = Attributor(model, mobilenet_v2_composite(low, high))(image, {"y": [target]}, record=["features.14"])
    heatmap = after.input_relevance
    assert torch.isfinite(heatmap).all()
    assert 0.99 < float(heatmap.sum()) / logit < 1.0
    assert 0.99 < float(after.relevances["features.14"].sum()) / logit < 1.0
    assert float(heatmap.abs().sum() / heatmap.sum()) < 1.1  # no positive and negative noise that cancels
    start = torch.zeros_like(logits)
    start[0, target] = logit
    theirs = zennit_relevance(model, mobilenet_v2_composite(low, high), image, start)
    assert float((heatmap - theirs).abs().max() / theirs.abs().max()) < 1e-4


def test_auto_gives_mobilenet_v2_the_bias_free_default():
    torchvision = pytest.importorskip("torchvision")
    from glocal.lrp.composites import auto

    torch.manual_seed(4)
    model = torchvision.models.mobilenet_v2(num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    chosen = auto(model)
    assert chosen.architecture == "mobilenet_v2"
    ours = Attributor(model, chosen.composite)(x, {"y": [0]}).input_relevance
    expected = Attributor(model, mobilenet_v2_composite())(x, {"y": [0]}).input_relevance
    torch.testing.assert_close(ours, expected)
