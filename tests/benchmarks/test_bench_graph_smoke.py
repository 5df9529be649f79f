"""Smoke test: benchmarks/bench_graph.py runs both cases with tiny settings, and both libraries agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.usefixtures("fashion_data")
def test_bench_graph_quick(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    pytest.importorskip("crp", reason="the benchmark compares against zennit-crp")
    pytest.importorskip("torchvision")
    lines = run_benchmark("bench_graph.py", "--quick", "--threads", "1")

    assert [row.get("case") for row in lines[1:]] == ["a", "b"]
    for row in lines[1:]:
        assert row["same_nodes_and_connections"] is True
        assert row["max_rel_diff"] <= 1e-5
        assert row["crp_s"] > 0 and row["glocal_s"] > 0 and row["native_s"] > 0
        assert row["nodes"] >= 3 and row["widths"] == [2, 2]
