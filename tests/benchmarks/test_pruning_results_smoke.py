"""Smoke tests: benchmarks/toy_pruning.py and benchmarks/prune_criteria.py run end to end with tiny settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def test_toy_pruning_quick(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    pytest.importorskip("sklearn")
    lines = run_benchmark("toy_pruning.py", "--quick", "--variants", "glocal", "--threads", "1")
    assert "machine" in lines[0] and lines[-1]["summary"] == "toy_pruning" and lines[-1]["seeds"] == 1
    rows = lines[1:-1]
    # per data set: the unpruned line, then per reference count the weight line and three data criteria
    assert len(rows) == 3 * (1 + 2 * 4)
    unpruned = {r["dataset"]: r for r in rows if r["criterion"] == "unpruned"}
    assert set(unpruned) == {"moons", "circles", "mult"}
    assert [unpruned[k]["published"] for k in ("moons", "circles", "mult")] == [99.9, 99.9, 93.4]
    assert all(0 <= r["train_accuracy"] <= 100 for r in unpruned.values())
    pruned = [r for r in rows if r["criterion"] != "unpruned"]
    assert {(r["dataset"], r["references"]) for r in pruned} == {
        ("moons", 10), ("moons", 2), ("circles", 10), ("circles", 2), ("mult", 20), ("mult", 4),
    }  # fmt: skip
    assert all(r["seeds"] == 1 and r["train_accuracy"]["std"] == 0.0 for r in pruned)
    published = {(r["dataset"], r["references"], r["criterion"]): r["published"] for r in pruned}
    assert published[("moons", 10, "relevance")] == 99.8 and published[("mult", 4, "taylor")] == 33.4


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
