"""Concept pruning: score channels by a criterion, remove the least important ones (as masks or physically), and
measure what the model loses.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).eval()
>>> data = torch.rand(16, 4)
>>> scores = channel_scores(net, data, ["0"], criterion="activation", progress=False)
>>> plan = prune_plan(scores, 0.5)
>>> small = pruned_copy(net, plan, data[:1])
>>> with masked(net, plan, data[:1]) as pruned:
...     torch.allclose(pruned(data), small.model(data), atol=1e-6)
True
"""

from .criteria import CRITERIA, ChannelScores, channel_scores
from .curves import RATES, CriteriaComparison, PruningCurve, compare_criteria, pruning_curve
from .masks import masked
from .physical import PrunedModel, pruned_copy
from .selection import PruningPlan, prune_plan

__all__ = [
    "CRITERIA",
    "RATES",
    "ChannelScores",
    "CriteriaComparison",
    "PrunedModel",
    "PruningCurve",
    "PruningPlan",
    "channel_scores",
    "compare_criteria",
    "masked",
    "prune_plan",
    "pruned_copy",
    "pruning_curve",
]
