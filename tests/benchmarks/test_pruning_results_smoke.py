"""Smoke tests: benchmarks/toy_pruning.py and benchmarks/prune_criteria.py run end to end with tiny settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def test_toy_pruning_quick(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    pytest.importorskip("sklearn")
    lines = run_benchmark("toy_pruning.py", "--quick", "--datasets", "moons", "--variants", "glocal", "--threads", "1")
    assert "machine" in lines[0] and lines[-1]["summary"] == "toy_pruning" and lines[-1]["seeds"] == 1
    rows = lines[1:-1]
    # the unpruned line, then per reference count (10, 2) the weight line and the three data criteria
    assert len(rows) == 1 + 2 * 4
    assert rows[0]["criterion"] == "unpruned" and rows[0]["published"] == 99.9
    assert 50 <= rows[0]["train_accuracy"] <= 100  # two epochs already separate the moons
    pruned = rows[1:]
    assert [(r["references"], r["criterion"]) for r in pruned] == [
        (count, criterion) for count in (10, 2) for criterion in ("weight", "relevance", "taylor", "gradient")
    ]
    assert all(r["seeds"] == 1 and r["train_accuracy"]["std"] == 0.0 for r in pruned)
    assert [r["published"] for r in pruned[:4]] == [99.8, 99.8, 84.8, 86.0]


@pytest.mark.usefixtures("fashion_data")
def test_prune_criteria_quick(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    lines = run_benchmark("prune_criteria.py", "--quick", "--cases", "fashion", "--threads", "1")
    assert "machine" in lines[0] and lines[-1]["summary"] == "prune_criteria"
    curves = [r for r in lines if r.get("model") == "fashion" and "class_specific" not in r]
    assert [r["criterion"] for r in curves] == ["relevance", "activation", "weight", "gradient", "taylor", "random"]
    for row in curves:
        assert row["rates"] == [0.0, 0.5, 0.9] and row["layers"] == ["conv1", "conv2"]
        assert row["accuracy"][0] == curves[0]["accuracy"][0]  # rate 0: the unpruned model, whatever the criterion
        # the AUC is the trapezoid over the rates divided by their span
        a = row["accuracy"]
        assert row["auc_accuracy"] == pytest.approx((0.5 * (a[0] + a[1]) / 2 + 0.4 * (a[1] + a[2]) / 2) / 0.9, abs=2e-4)
    classes = [r for r in lines if "class_specific" in r]
    assert [r["class_specific"] for r in classes] == [1, 5, 8]
    assert all(r["remove"] == "most" and r["reference_samples"] > 0 for r in classes)
    assert all(len(r["class_accuracy"]) == len(r["random_other_accuracy"]) == 3 for r in classes)
