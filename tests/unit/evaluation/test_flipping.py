"""Concept flipping against a slow, obvious loop (one forward pass per step, the channels zeroed by hand), and orders
and curves worked out by hand on a model whose relevances are known."""

from __future__ import annotations

import math

import pytest
import torch
from model_state import assert_unchanged, snapshot
from zennit.composites import EpsilonPlus

from glocal import Attributor
from glocal.errors import InputError, LayerError
from glocal.evaluation import FlippingResult, concept_flipping, wilcoxon_signed_rank


def slow_curves(model, inputs, layer, order, counts, target):
    """One forward pass per step: a hook zeroes the first k channels of ``order`` at ``layer``."""
    module = model.get_submodule(layer)
    logits, probabilities = [], []
    for k in counts:
        off = order[:k].tolist()

        def hook(module, inputs, output, off=off):
            output = output.clone()
            output[:, off] = 0.0
            return output

        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                output = model(inputs)
        finally:
            handle.remove()
        logits.append(float(output[0, target]))
        probabilities.append(float(output.double().softmax(1)[0, target]))
    return logits, probabilities


def test_batched_flipping_equals_one_forward_per_step(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus())
    result = concept_flipping(attributor, digits, "relu2", steps=3, random_orders=2, seed=5, progress=False)
    assert result.switched_off == (0, 1, 2, 4)
    generator = torch.Generator().manual_seed(5)  # the random orders: drawn sample by sample from one generator
    drawn = [[torch.randperm(4, generator=generator) for _ in range(2)] for _ in range(3)]
    activation = []
    handle = skip_net.relu2.register_forward_hook(lambda m, i, o: activation.append(o.detach()))
    with torch.no_grad():
        skip_net(digits)
    handle.remove()
    for n in range(3):
        relevance = result.relevance[n]
        orders = {
            "morf": relevance.argsort(descending=True, stable=True),
            "lerf": relevance.argsort(stable=True),
            "actmax": activation[0][n].sum((1, 2)).argsort(descending=True, stable=True),
        }
        for name, order in orders.items():
            target = result.targets[n]
            logits, probabilities = slow_curves(skip_net, digits[n : n + 1], "relu2", order, [0, 1, 2, 4], target)
            assert result.logits[name][n].tolist() == pytest.approx(logits, abs=1e-5)
            assert result.probabilities[name][n].tolist() == pytest.approx(probabilities, abs=1e-6)
        for r in range(2):
            logits, _ = slow_curves(skip_net, digits[n : n + 1], "relu2", drawn[n][r], [0, 1, 2, 4], result.targets[n])
            assert result.random_logits[r, n].tolist() == pytest.approx(logits, abs=1e-5)
    with torch.no_grad():
        assert list(result.targets) == skip_net(digits).argmax(1).tolist()
    one_row_group = concept_flipping(attributor, digits, "relu2", steps=3, random_orders=2, seed=5, batch_size=1)
    for name in ("morf", "lerf", "actmax"):
        assert torch.allclose(one_row_group.logits[name], result.logits[name], atol=1e-5)


def known_net() -> torch.nn.Sequential:
    """x = (1, 0) gives hidden activations a = (1, 2, 3, 4); logit 0 = a . (3, -1, 1, 0.5) = 6, logit 1 = 0."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[3.0, -1.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0]]))
    return net.eval()


def test_orders_curves_and_areas_by_hand():
    # epsilon rule at the last (bias-free) linear layer: R_c = a_c w_0c * z / (z + eps) = a_c w_0c = (3, -2, 3, 2)
    result = concept_flipping(
        Attributor(known_net(), EpsilonPlus(epsilon=1e-9)), torch.tensor([[1.0, 0.0]]), "1", steps=4, random_orders=0
    )
    assert result.targets == (0,)
    assert result.relevance[0].tolist() == pytest.approx([3.0, -2.0, 3.0, 2.0], rel=1e-6)
    # MoRF: channels 0, 2 (ties: lower first), 3, 1 -> 6, 6-3, 6-3-3, 6-3-3-2, 0
    assert result.logits["morf"][0].tolist() == pytest.approx([6.0, 3.0, 0.0, -2.0, 0.0])
    # LeRF: 1, 3, 0, 2 -> 6, 6+2, 8-2, 6-3, 0
    assert result.logits["lerf"][0].tolist() == pytest.approx([6.0, 8.0, 6.0, 3.0, 0.0])
    # ActMax: a descending, channels 3, 2, 1, 0 -> 6, 6-2, 4-3, 1+2, 0
    assert result.logits["actmax"][0].tolist() == pytest.approx([6.0, 4.0, 1.0, 3.0, 0.0])
    # probability of unit 0 against a zero logit: sigmoid
    assert result.probabilities["morf"][0, 1].item() == pytest.approx(1 / (1 + math.exp(-3.0)))
    assert result.aopc("morf") == pytest.approx((0 + 3 + 6 + 8 + 6) / 5)
    assert result.aopc("lerf") == pytest.approx((0 - 2 + 0 + 3 + 6) / 5)
    assert result.abpc() == pytest.approx((0 + 5 + 6 + 5 + 0) / 5)
    assert "random" not in result.orders
    with pytest.raises(InputError, match="random_orders"):
        result.wilcoxon()


def test_wilcoxon_compares_morf_with_the_random_mean(skip_net):
    torch.manual_seed(3)
    inputs = torch.rand(8, 1, 16, 16)
    result = concept_flipping(Attributor(skip_net, EpsilonPlus()), inputs, "relu2", steps=4, random_orders=3)
    random_mean = torch.stack([(r[:, :1] - r).mean(1) for r in result.random_logits]).mean(0)
    assert torch.allclose(result.aopc_per_sample("random"), random_mean)
    expected = wilcoxon_signed_rank(result.aopc_per_sample("morf"), random_mean, alternative="greater")
    assert result.wilcoxon() == expected
    assert result.spread().shape == (8, 5)
    data = result.to_dict()
    assert data["aopc"]["morf"]["logit"] == pytest.approx(result.aopc("morf"))
    assert len(data["random_logits"]) == 3
    assert "ABPC" in result.table() and "MoRF > random" in result.summary()


def test_result_is_frozen_and_figure_draws(skip_net, digits):
    pytest.importorskip("matplotlib")
    result = concept_flipping(Attributor(skip_net, EpsilonPlus()), digits, "conv2", steps=2, random_orders=2)
    assert isinstance(result, FlippingResult)
    with pytest.raises(AttributeError):
        result.layer = "x"  # type: ignore[misc]
    figure = result.figure()
    assert len(figure.axes[0].lines) == 4  # morf, lerf, actmax, random


class Fragile(torch.nn.Module):
    """Fails without autograd: in the flipping passes, after the attribution pass worked."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            raise ValueError("no autograd")
        return self.net(x)


def test_model_unchanged_after_use_and_after_an_exception(skip_net, digits):
    skip_net.linear1.weight.requires_grad_(False)
    before = snapshot(skip_net)
    concept_flipping(Attributor(skip_net, EpsilonPlus()), digits, "conv2", steps=2, random_orders=1)
    assert_unchanged(before, skip_net)
    fragile = Fragile(skip_net)
    with pytest.raises(ValueError, match="no autograd"):
        concept_flipping(Attributor(fragile, EpsilonPlus()), digits, "net.conv2", steps=2, random_orders=1)
    assert_unchanged(before, skip_net)


def test_errors_say_what_is_wrong(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus())
    with pytest.raises(LayerError, match="conv2"):
        concept_flipping(attributor, digits, "conv3")
    with pytest.raises(InputError, match="orders"):
        concept_flipping(attributor, digits, "conv2", orders=("morf", "best"))
    with pytest.raises(InputError, match="steps"):
        concept_flipping(attributor, digits, "conv2", steps=0)
    with pytest.raises(InputError, match="batch_size"):
        concept_flipping(attributor, digits, "conv2", batch_size=0)


def test_lower_layers_run_once_per_sample_and_skip_branches_fall_back(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus())
    batches: list[int] = []
    handle = skip_net.conv1.register_forward_hook(lambda m, i, o: batches.append(o.shape[0]))
    try:
        concept_flipping(attributor, digits, "relu2", steps=3, random_orders=1, progress=False)
        assert batches[-3:] == [1, 1, 1]  # below relu2: one row per sample, not 4 orders x 4 steps
        batches.clear()
        # conv2 meets the parallel branch in torch.stack, which cannot broadcast one row: the input is repeated
        result = concept_flipping(attributor, digits, "conv2", steps=2, orders=("morf",), random_orders=0)
        assert batches[-3:] == [3, 3, 3]
    finally:
        handle.remove()
    for n in range(3):
        order = result.relevance[n].argsort(descending=True, stable=True)
        logits, _ = slow_curves(skip_net, digits[n : n + 1], "conv2", order, [0, 2, 4], result.targets[n])
        assert result.logits["morf"][n].tolist() == pytest.approx(logits, abs=1e-5)
