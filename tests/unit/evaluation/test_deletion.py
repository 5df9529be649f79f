"""Heatmap deletion and insertion against a slow loop: one conditional heatmap per sample and concept, the positions
changed by hand, one attribution per perturbed input."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from model_state import assert_unchanged, snapshot
from zennit.composites import EpsilonPlus

from glocal import Attributor, ChannelConcept, Condition
from glocal.errors import InputError
from glocal.evaluation import DeletionResult, heatmap_deletion

CONCEPTS = [("2", 1), ("5", 3)]
QUIET = pytest.mark.filterwarnings("ignore:.*no positive relevance")  # random small nets: some concepts are unused


def slow_curve(attributor, x, layer, channel, target, order, counts, mode, base):
    values = []
    for p in counts:
        where = torch.zeros(x[0, 0].numel(), dtype=torch.bool)
        where[order[:p]] = True
        where = where.view(1, 1, *x.shape[2:])
        perturbed = torch.where(where, base, x) if mode == "deletion" else torch.where(where, x, base)
        result = attributor(perturbed, Condition(targets=target), record=[layer], heatmap=False)
        values.append(float(ChannelConcept().relevance(result.relevances[layer])[0, channel]))
    return values


@QUIET
@pytest.mark.parametrize(("mode", "baseline"), [("deletion", 0.0), ("insertion", "mean")])
def test_batched_deletion_equals_the_slow_loop(conv_net, images, mode, baseline):
    attributor = Attributor(conv_net, EpsilonPlus())
    result = heatmap_deletion(
        attributor, images, CONCEPTS, steps=4, mode=mode, baseline=baseline, random_orders=2, seed=3, progress=False
    )
    counts = [0, 16, 32, 48, 64]  # 8 x 8 positions in 4 steps
    assert result.fractions == tuple(c / 64 for c in counts)
    generator = torch.Generator().manual_seed(3)  # random orders: sample by sample, concept by concept
    drawn = [[[torch.randperm(64, generator=generator) for _ in range(2)] for _ in CONCEPTS] for _ in range(3)]
    for n in range(3):
        x = images[n : n + 1]
        base = x.mean((2, 3), keepdim=True).expand_as(x) if baseline == "mean" else torch.zeros_like(x)
        target = result.targets[n]
        for m, (layer, channel) in enumerate(CONCEPTS):
            heatmap = attributor(x, Condition(targets=target, layers={layer: [channel]})).heatmap[0]
            order = heatmap.flatten().argsort(descending=True, stable=True)
            expected = slow_curve(attributor, x, layer, channel, target, order, counts, mode, base)
            assert result.relevance[m, n].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6)
            for r in range(2):
                expected = slow_curve(attributor, x, layer, channel, target, drawn[n][m][r], counts, mode, base)
                assert result.random_relevance[r, m, n].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    split = heatmap_deletion(  # 7 rows per pass: groups of 5 steps split across passes
        attributor, images, CONCEPTS, steps=4, mode=mode, baseline=baseline, random_orders=2, seed=3, batch_size=7
    )
    assert torch.allclose(split.relevance, result.relevance, rtol=1e-4, atol=1e-6)
    assert torch.allclose(split.random_relevance, result.random_relevance, rtol=1e-4, atol=1e-6)
    unperturbed = result.relevance[:, :, 0] if mode == "deletion" else result.relevance[:, :, -1]
    assert torch.equal(result.reference, unperturbed)


def test_areas_and_test_from_the_curves():
    # two samples, one concept, fractions 0, .5, 1; heatmap curves 2, 1, 0 and 4, 0, 0 (references 2 and 4);
    # normalised: 1, .5, 0 (area .5) and 1, 0, 0 (area .25); random: 1, 1, 1 -> area 1
    relevance = torch.tensor([[[2.0, 1.0, 0.0], [4.0, 0.0, 0.0]]], dtype=torch.float64)
    random = torch.tensor([[[[2.0, 2.0, 2.0], [4.0, 4.0, 4.0]]]], dtype=torch.float64)
    result = DeletionResult(
        mode="deletion",
        concepts=(("a", 0),),
        fractions=(0.0, 0.5, 1.0),
        targets=(0, 1),
        relevance=relevance,
        random_relevance=random,
        reference=torch.tensor([[2.0, 4.0]], dtype=torch.float64),
        baseline=0.0,
        seed=0,
    )
    assert result.areas(0).tolist() == pytest.approx([0.5, 0.25])
    assert result.area(("a", 0)) == pytest.approx(0.375) and result.area(order="random") == pytest.approx(1.0)
    # both samples lower than random: T+ = 0 of ranks 1, 2; P(T <= 0) = 1/4
    assert result.wilcoxon().pvalue == pytest.approx(0.25)
    assert result.to_dict()["areas"]["a:0"] == {"heatmap": pytest.approx(0.375), "random": pytest.approx(1.0)}
    assert "a:0" in result.table()
    if importlib.util.find_spec("matplotlib") is not None:
        lines = result.figure().axes[0].lines
        assert [line.get_ydata().tolist() for line in lines] == [
            [1.0, 0.25, 0.0],
            [1.0, 1.0, 1.0],
        ]  # mean of (1, .5, 0) and (1, 0, 0)


def test_no_positive_relevance_gives_nan_and_a_warning(conv_net, images):
    with torch.no_grad():
        conv_net[0].weight[1].zero_()
        conv_net[0].bias[1] = -1.0  # channel 1 of layer "1" (after the ReLU) is always 0
    with pytest.warns(UserWarning, match="no positive relevance"):
        result = heatmap_deletion(Attributor(conv_net, EpsilonPlus()), images, ("1", 1), steps=2, random_orders=1)
    assert math.isnan(result.area())


@QUIET
def test_model_unchanged_and_errors(conv_net, images):
    before = snapshot(conv_net)
    attributor = Attributor(conv_net, EpsilonPlus())
    result = heatmap_deletion(attributor, images[:1], CONCEPTS, steps=2, random_orders=1, progress=False)
    assert result.relevance.shape == (2, 1, 3)
    assert_unchanged(before, conv_net)
    with pytest.raises(InputError, match="mode"):
        heatmap_deletion(attributor, images, CONCEPTS, mode="erase")
    with pytest.raises(InputError, match="baseline"):
        heatmap_deletion(attributor, images, CONCEPTS, baseline="blur")
    with pytest.raises(InputError, match="layer, channel"):
        heatmap_deletion(attributor, images, [("2",)])
    with pytest.raises(InputError, match="spatial"):
        heatmap_deletion(attributor, images.flatten(1), CONCEPTS)
    assert_unchanged(before, conv_net)
