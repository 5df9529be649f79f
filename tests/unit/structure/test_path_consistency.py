"""Path consistency: scores equal hand-computed values on constructed cases, and counts over the images' own paths."""

from __future__ import annotations

import json
import math

import pytest
import torch
from zennit.composites import EpsilonPlusFlat

from glocal import Attributor
from glocal.errors import InputError
from glocal.structure.path_consistency import (
    PathConsistency,
    mean_jaccard,
    path_consistency,
    relevance_centroid,
    spatial_agreement,
)


def test_consistency_helpers_hand_computed():
    assert mean_jaccard([{1, 2}, {1, 2}]) == 1.0
    assert mean_jaccard([{1, 2}, {3, 4}]) == 0.0
    assert mean_jaccard([{1, 2, 3}, {2, 3, 4}, {1, 2, 3}]) == pytest.approx((2 / 4 + 3 / 3 + 2 / 4) / 3)
    assert mean_jaccard([{1}]) == 1.0
    heatmap = torch.zeros(5, 5)
    heatmap[0, 0], heatmap[4, 4] = 1.0, 3.0  # centre of mass three quarters of the way to the corner
    assert relevance_centroid(heatmap) == pytest.approx((0.75, 0.75))
    assert relevance_centroid(-heatmap) is None  # no positive relevance
    assert spatial_agreement([(0.5, 0.5), (0.5, 0.5), (0.5, 0.5)]) == 1.0
    assert spatial_agreement([(0.0, 0.0), (1.0, 1.0)]) == pytest.approx(0.0)
    points = [(0.0, 0.0), (0.0, 0.5), (0.5, 0.0)]  # distances 0.5, 0.5, sqrt(0.5)
    assert spatial_agreement(points) == pytest.approx(1 - (1 + math.sqrt(0.5)) / 3 / math.sqrt(2))
    assert math.isnan(spatial_agreement([(0.2, 0.3)]))


def test_identical_images_agree_fully_and_shifted_ones_less(conv_net, images):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    same = images[:1].repeat(3, 1, 1, 1)
    consistency = path_consistency(attributor, same, "8:2", targets=1, k=3, follow=1)
    assert consistency.path_votes == ((str(consistency.paths[0]), 3),)
    assert consistency.jaccard[0] == 1.0
    for concept in consistency.concepts_at(0):
        assert concept.votes == 3 and concept.frequency == 1.0
        # identical heatmaps: the same centroid (or none, without positive relevance)
        assert math.isnan(concept.spatial) or concept.spatial == pytest.approx(1.0)
        assert concept.score == pytest.approx(1.0)
    # votes and Jaccard over different images equal counts over their own paths
    mixed = path_consistency(attributor, images, "8:2", targets=[1, 1, 1], k=3, follow=1)
    tops = [{(c.layer, c.concept) for c in p.steps[0].candidates} for p in mixed.paths]
    assert mixed.jaccard[0] == pytest.approx(mean_jaccard(tops))
    for concept in mixed.concepts_at(0):
        assert concept.votes == sum((concept.layer, concept.concept) in top for top in tops)
    assert mixed.to_dict()["k"] == 3
    loaded = PathConsistency.from_json(mixed.to_json(heatmaps=True))
    assert loaded.paths == mixed.paths and loaded.path_votes == mixed.path_votes and loaded.k == mixed.k
    # every value the same (NaN spatial agreements, which == cannot compare, as the same text)
    assert json.dumps(loaded.to_dict()) == json.dumps(mixed.to_dict()) and len(loaded.concepts) == len(mixed.concepts)
    first = loaded.paths[0].steps[0].candidates[0]
    torch.testing.assert_close(first.heatmap, mixed.paths[0].steps[0].candidates[0].heatmap, rtol=0, atol=0)
    with pytest.raises(InputError, match="one class per image"):
        path_consistency(attributor, images, "8:2", targets=[1, 2])
