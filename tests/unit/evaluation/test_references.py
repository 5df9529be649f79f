"""RelMax against ActMax overlap from a small built index, against sets counted by hand from the scores' definitions
(relmax_sum: the concept's relevance for the label, summed over space; actmax_sum: the positive part of its
activation, summed over space; only positive scores count)."""

from __future__ import annotations

import math

import pytest
import torch
from zennit.composites import EpsilonPlus

from glocal import Attributor, Condition, PerSample
from glocal.errors import InputError
from glocal.evaluation import ReferenceOverlap, reference_overlap
from glocal.index import build_index

LAYER = "2"


def net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 3),
    ).eval()


def test_overlap_equals_a_hand_count(tmp_path):
    model = net()
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.rand(20, 1, 8, 8, generator=generator), torch.arange(20) % 3
    data = torch.utils.data.TensorDataset(images, labels)
    index = build_index(model, EpsilonPlus(), data, [LAYER], tmp_path / "index", k=5, batch_size=8, progress=False)
    result = reference_overlap(index, LAYER, k=4)
    attribution = Attributor(model, EpsilonPlus())(
        images, Condition(targets=PerSample([[int(t)] for t in labels])), record=[LAYER], heatmap=False
    )
    relmax = attribution.relevances[LAYER].flatten(2).sum(-1)  # (20, 4)
    actmax = attribution.activations[LAYER].clamp(min=0).flatten(2).sum(-1)

    def top(scores, channel):
        order = scores[:, channel].argsort(descending=True)[:4]
        return [int(i) for i in order if scores[i, channel] > 0]

    for channel in range(4):
        r, a = top(relmax, channel), top(actmax, channel)
        both = set(r) & set(a)
        assert result.overlap[channel] == len(both) / 4
        union = set(r) | set(a)
        assert result.jaccard[channel] == len(both) / len(union) if union else math.isnan(result.jaccard[channel])
        assert set(result.shared[channel]) == both
    assert 0 < result.mean_overlap < 1  # neither trivially disjoint nor identical on this net
    assert result.mean_overlap == pytest.approx(sum(result.overlap) / 4)
    assert isinstance(result, ReferenceOverlap) and result.to_dict()["k"] == 4
    assert reference_overlap(index, LAYER).k == 5
    assert reference_overlap(index, LAYER, modes=("relmax_sum", "relmax_sum"), concepts=[0]).overlap[0] == (
        len(index.samples(LAYER, 0, n=5)[0]) / 5
    )
    with pytest.raises(InputError, match="between 1 and the 5"):
        reference_overlap(index, LAYER, k=6)
    with pytest.raises(InputError, match="modes"):
        reference_overlap(index, LAYER, modes=("relmax_sum",))
