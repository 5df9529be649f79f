"""Concepts, selectors, region relevance and the one-call explainer against brute-force references."""

from __future__ import annotations

import itertools

import pytest
import torch
from zennit.composites import EpsilonPlusFlat

from glocal import (
    Attributor,
    ChannelConcept,
    ConceptError,
    ConceptExplainer,
    CoveringShare,
    Ids,
    NeuronConcept,
    RegionConcept,
    TopK,
    relevance_shares,
)


def test_relevance_shares_signed_and_abs():
    relevance = torch.tensor([[2.0, -1.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(relevance_shares(relevance), torch.tensor([[0.5, -0.25, 0.25], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(relevance_shares(relevance, "signed"), torch.tensor([[1.0, -0.5, 0.5], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="'abs' or 'signed'"):
        relevance_shares(relevance, "max")


def brute_force_cover(row: list[float], share: float) -> list[int]:
    """Smallest subset (by size, then by relevance) whose sum reaches share * sum of positive values."""
    goal = share * sum(v for v in row if v > 0)
    if goal <= 0:
        return []
    for size in range(1, len(row) + 1):
        best = None
        for subset in itertools.combinations(range(len(row)), size):
            total = sum(row[i] for i in subset)
            if total >= goal * (1 - 1e-6) and (best is None or total > sum(row[i] for i in best)):
                best = subset
        if best is not None:
            return sorted(best, key=lambda i: -row[i])
    return []


@pytest.mark.parametrize("share", [0.3, 0.5, 0.8, 0.95, 1.0])
def test_covering_share_is_smallest_set(share):
    torch.manual_seed(0)
    relevance = torch.randn(6, 7)
    selected = CoveringShare(share).select(relevance)
    for row, ids in zip(relevance.tolist(), selected, strict=True):
        assert ids == brute_force_cover(row, share)


def test_topk_and_ids():
    relevance = torch.tensor([[0.1, 0.5, -0.9, 0.3], [1.0, 0.0, 2.0, -1.0]])
    assert TopK(2).select(relevance) == [[1, 3], [2, 0]]
    assert TopK(10).select(relevance)[0] == [1, 3, 0, 2]
    assert Ids([3]).select(relevance) == [[3], [3]]
    with pytest.raises(ConceptError, match=r"out of range: the layer has 4 concepts \(0 to 3\); check the layer name"):
        Ids([4]).select(relevance)


def test_neuron_and_region_concepts_on_latent_maps(conv_net, images):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    region = torch.zeros(8, 8)
    region[2:5, 3:7] = 1
    neuron = NeuronConcept.index(torch.Size([8, 8, 8]), 4, 3, 5)  # channel 4 at row 3, column 5
    plain = attributor(images, {"y": [1]}, record=["2"])
    relevance = plain.relevances["2"]
    # a neuron condition gives a heatmap carrying exactly that neuron's relevance (conservation of z+ without bias
    # is approximate, so compare against the single-neuron mask computed through the channel engine instead)
    by_neuron = Attributor(conv_net, EpsilonPlusFlat(), concepts={"2": NeuronConcept()})(
        images, {"2": [neuron], "y": [1]}
    )
    mask = torch.zeros(1, 8, 8, 8)
    mask[0, 4, 3, 5] = 1
    # the same through a region concept restricted to one pixel of channel 4
    one_pixel = torch.zeros(8, 8)
    one_pixel[3, 5] = 1
    by_region = Attributor(conv_net, EpsilonPlusFlat(), concepts={"2": RegionConcept(one_pixel)})(
        images, {"2": [4], "y": [1]}
    )
    torch.testing.assert_close(by_neuron.heatmap, by_region.heatmap)
    # region concepts: relevance inside the region, and region + complement = whole channel
    inside = RegionConcept(region).relevance(relevance)
    torch.testing.assert_close(inside, (relevance * region).sum((-1, -2)))
    regional = Attributor(conv_net, EpsilonPlusFlat(), concepts={"2": RegionConcept(region)})
    outside = Attributor(conv_net, EpsilonPlusFlat(), concepts={"2": RegionConcept(1 - region)})
    channel = attributor(images, {"2": [4], "y": [1]})
    total = regional(images, {"2": [4], "y": [1]}).heatmap + outside(images, {"2": [4], "y": [1]}).heatmap
    torch.testing.assert_close(total, channel.heatmap, rtol=1e-5, atol=1e-9)
    with pytest.raises(ConceptError, match="resize the region"):
        Attributor(conv_net, EpsilonPlusFlat(), concepts={"2": RegionConcept(torch.ones(3, 3))})(
            images, {"2": [4], "y": [1]}
        )
    del mask


def test_region_relevance_equals_heatmaps_summed_in_region(conv_net, images):
    """One double-backward pass gives what the heatmaps of all channels put into an input region."""
    region = torch.zeros(8, 8)
    region[:4, 2:6] = 1
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    for sole_path in (True, False):
        with attributor.session(images, layers=["5"], sole_path=sole_path) as run:
            scores = ChannelConcept().relevance(run.region_relevance("5", region, {"y": [1]}))
            conditional = run.attribute([{"5": [c], "y": [1]} for c in range(8)])
        expected = (conditional.grid(conditional.heatmap) * region).sum((-1, -2))
        assert expected.abs().max() > 0
        torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())


def test_explainer_equals_brute_force(conv_net, images):
    explainer = ConceptExplainer(conv_net, EpsilonPlusFlat())
    explanation = explainer(images, "5", select=3)
    targets = conv_net(images).argmax(1)
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    assert explanation.targets.tolist() == targets.tolist()
    for n in range(images.shape[0]):
        sample = images[n : n + 1]
        plain = attributor(sample, {"y": [int(targets[n])]}, record=["5"])
        relevance = ChannelConcept().relevance(plain.relevances["5"])[0]
        # the selected concepts carry the three largest relevances (ties between dead channels may go either way)
        expected_ids = explanation.concept_ids[n]
        torch.testing.assert_close(relevance[expected_ids], relevance.sort(descending=True).values[:3])
        torch.testing.assert_close(explanation.heatmap[n], plain.heatmap[0])
        shares = relevance / relevance.abs().sum()
        torch.testing.assert_close(explanation.concept_shares[n], shares[expected_ids])
        for k, concept in enumerate(expected_ids):
            single = attributor(sample, {"5": [concept], "y": [int(targets[n])]})
            torch.testing.assert_close(explanation.concept_heatmaps[n, k], single.heatmap[0])


def test_explainer_with_explicit_targets_covering_share_and_region(conv_net, images):
    explainer = ConceptExplainer(conv_net, EpsilonPlusFlat())
    by_list = explainer(images, "5", target=[0, 1, 2], select=CoveringShare(0.9))
    assert by_list.targets.tolist() == [0, 1, 2]
    assert all(
        ids == CoveringShare(0.9).select(by_list.concept_relevance[n : n + 1])[0]
        for n, ids in enumerate(by_list.concept_ids)
    )
    width = by_list.concept_heatmaps.shape[1]
    assert width == max(len(ids) for ids in by_list.concept_ids)
    region = torch.zeros(8, 8)
    region[4:, 4:] = 1
    regional = explainer(images, "5", target=1, select=2, region=region)
    with Attributor(conv_net, EpsilonPlusFlat()).session(images, layers=["5"]) as run:
        expected = ChannelConcept().relevance(run.region_relevance("5", region, {"y": [1]}))
    torch.testing.assert_close(regional.concept_relevance, expected)
    assert regional.concept_ids == TopK(2).select(expected)
