"""Pruning curves and criteria comparisons against hand-computed accuracies."""

from __future__ import annotations

import json
import math

import pytest
import torch

from glocal.errors import InputError
from glocal.pruning import ChannelScores, PruningCurve, compare_criteria, pruning_curve


def identity_net() -> torch.nn.Sequential:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.ReLU(), torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[2].weight.copy_(torch.eye(2))
    return net.eval()


DATA = [(torch.tensor([1.0, 0.0]), 0), (torch.tensor([0.0, 1.0]), 1), (torch.tensor([2.0, 1.0]), 0)]


def test_curve_by_hand():
    # rate 0: outputs = inputs, all three right; label logits 1, 1, 2 -> mean 4/3.
    # rate 0.5 removes hidden unit 1 (score 0.5 < 1): outputs (1, 0), (0, 0), (2, 0) -> sample 1 is predicted 0
    # (argmax of a tie is the first), so accuracy 2/3, class 0: 2/2, class 1: 0/1; label logits 1, 0, 2 -> mean 1.
    scores = ChannelScores("test", {"0": torch.tensor([1.0, 0.5], dtype=torch.float64)}, 3, None, False, False)
    curve = pruning_curve(identity_net(), DATA, scores, rates=(0.5, 0.0), batch_size=2, progress=False)
    assert curve.rates == (0.0, 0.5)
    assert curve.accuracy == pytest.approx((1.0, 2 / 3))
    assert curve.class_accuracy == ((1.0, 1.0), (1.0, 0.0))  # exact: counts of 1 and 2
    assert curve.logit == pytest.approx((4 / 3, 1.0))
    assert curve.sparsity == (0.0, 0.5)
    assert curve.auc() == pytest.approx((1 + 2 / 3) / 2)
    assert curve.auc("logit") == pytest.approx((4 / 3 + 1) / 2)
    assert curve.values(1) == pytest.approx((1.0, 0.0))
    assert curve.samples == 3 and curve.criterion == "test"
    # removing the most important unit instead (unit 0): outputs (0, 0), (0, 1), (0, 1): right, right, wrong
    most = pruning_curve(identity_net(), DATA, scores, rates=(0.0, 0.5), remove="most", progress=False)
    assert most.accuracy == pytest.approx((1.0, 2 / 3)) and most.class_accuracy[1] == pytest.approx((0.5, 1.0))
    assert json.loads(json.dumps(curve.to_dict()))["auc"] == pytest.approx(5 / 6)


def test_classes_and_others():
    curve = PruningCurve(
        "test",
        (0.0, 1.0),
        (1.0, 0.5),
        ((1.0, 0.8, math.nan), (0.2, 0.6, math.nan)),
        (1.0, 0.0),
        (0.0, 1.0),
        5,
        "layer",
        classes=(0,),
    )
    assert curve.values("classes") == pytest.approx((1.0, 0.2))
    assert curve.values("others") == pytest.approx((0.8, 0.6))  # class 2 has no samples: left out, not NaN
    assert curve.auc("others") == pytest.approx(0.7)
    assert json.loads(json.dumps(curve.to_dict()))["class_accuracy"][0] == [1.0, 0.8, None]
    with pytest.raises(ValueError, match="of must be"):
        curve.values("precision")


def test_compare_criteria_and_table(conv_net):
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(12, 3, 8, 8, generator=generator)
    with torch.no_grad():
        labels = conv_net(images).argmax(1)
    data = torch.utils.data.TensorDataset(images, labels)
    comparison = compare_criteria(
        conv_net,
        data,
        ["0", "5"],
        criteria=("activation", "weight", "random"),
        rates=(0.0, 0.5),
        classes=[int(labels[0])],
        progress=False,
    )
    assert list(comparison.curves) == ["activation", "weight", "random"]
    for curve in comparison.curves.values():
        assert curve.accuracy[0] == 1.0  # labels are the unpruned predictions
        assert curve.classes == (int(labels[0]),)
    table = comparison.table()
    lines = table.splitlines()
    assert lines[0].startswith("| criterion | AUC accuracy | AUC logit | AUC class") and len(lines) == 5
    assert lines[3].startswith("| weight | ") and "1.0000" in lines[3]
    assert json.loads(json.dumps(comparison.to_dict()))["classes"] == [int(labels[0])]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in conv_net.modules())


def test_curves_need_labels(conv_net):
    scores = ChannelScores("test", {"0": torch.ones(6, dtype=torch.float64)}, 0, None, False, False)
    with pytest.raises(InputError, match="labelled data"):
        pruning_curve(conv_net, torch.rand(2, 3, 8, 8), scores, progress=False)
