"""Pruning plans against hand-computed ones."""

from __future__ import annotations

import pytest
import torch

from glocal.errors import InputError, LayerError
from glocal.pruning import ChannelScores, prune_plan


def scores(**layers: list[float]) -> ChannelScores:
    return ChannelScores(
        "test", {n: torch.tensor(v, dtype=torch.float64) for n, v in layers.items()}, 4, None, False, True
    )


def test_layer_scope_removes_the_lowest_share_of_each_layer():
    # a: 5 channels, rate 0.5 -> floor(2.5) = 2 lowest: 0.05 (ch 3), 0.1 (ch 1); b: 4 channels -> 2: ch 2, ch 0
    plan = prune_plan(scores(a=[0.3, 0.1, 0.4, 0.05, 0.15], b=[0.2, 0.5, 0.1, 0.2]), 0.5)
    assert plan.removed == {"a": (1, 3), "b": (0, 2)}
    assert plan.channels == {"a": 5, "b": 4}
    assert plan.sparsity == pytest.approx(4 / 9)
    assert plan.criterion == "test"


def test_ties_go_to_the_lower_channel_index():
    # all equal: rate 0.5 of 4 -> channels 0 and 1
    assert prune_plan(scores(a=[1.0, 1.0, 1.0, 1.0]), 0.5).removed == {"a": (0, 1)}
    # b's ties at 0.2 (ch 0, ch 3): 0.1 (ch 2) first, then ch 0
    assert prune_plan(scores(b=[0.2, 0.5, 0.1, 0.2]), 0.5).removed == {"b": (0, 2)}


def test_global_scope_pools_all_layers():
    # 9 channels, rate 0.34 -> floor(3.06) = 3 lowest overall: a3 0.05, then the tie at 0.1 (layer a first):
    # a1, b2
    plan = prune_plan(scores(a=[0.3, 0.1, 0.4, 0.05, 0.15], b=[0.2, 0.5, 0.1, 0.2]), 0.34, scope="global")
    assert plan.removed == {"a": (1, 3), "b": (2,)}
    # rate 0.9 -> 8 of 9 wanted, but each layer keeps 1 -> a loses 4, b loses 3: 7 removed
    full = prune_plan(scores(a=[0.3, 0.1, 0.4, 0.05, 0.15], b=[0.2, 0.5, 0.1, 0.2]), 0.9, scope="global")
    assert full.removed == {"a": (0, 1, 3, 4), "b": (0, 2, 3)}


def test_keep_and_per_layer_rates():
    plan = prune_plan(scores(a=[0.3, 0.1, 0.4, 0.05, 0.15], b=[0.2, 0.5, 0.1, 0.2]), {"a": 1.0}, keep=2)
    # a: rate 1 -> 5, capped at 5 - keep = 3 lowest (ch 3, 1, 4); b not named -> rate 0
    assert plan.removed == {"a": (1, 3, 4), "b": ()}
    assert prune_plan(scores(a=[0.3, 0.1]), 0.0).removed == {"a": ()}


def test_remove_most_takes_the_highest_first():
    plan = prune_plan(scores(a=[0.3, 0.1, 0.4, 0.05, 0.15]), 0.4, remove="most")
    assert plan.removed == {"a": (0, 2)}


def test_bad_arguments():
    s = scores(a=[0.3, 0.1])
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        prune_plan(s, 1.5)
    with pytest.raises(InputError, match="keep"):
        prune_plan(s, 0.5, keep=0)
    with pytest.raises(LayerError, match="not scored"):
        prune_plan(s, {"z": 0.5})
    with pytest.raises(InputError, match="scope='layer'"):
        prune_plan(s, {"a": 0.5}, scope="global")
    with pytest.raises(ValueError, match="scope"):
        prune_plan(s, 0.5, scope="model")
    with pytest.raises(ValueError, match="remove"):
        prune_plan(s, 0.5, remove="lowest")


def test_to_dict():
    plan = prune_plan(scores(a=[0.3, 0.1, 0.2, 0.4]), 0.5)
    assert plan.to_dict() == {"channels": {"a": 4}, "removed": {"a": [1, 2]}, "criterion": "test", "sparsity": 0.5}
