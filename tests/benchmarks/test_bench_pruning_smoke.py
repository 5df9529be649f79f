"""Smoke test: benchmarks/bench_pruning.py scores 16 images on every side and the scores agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.usefixtures("fashion_data")
def test_bench_pruning_quick(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    pytest.importorskip("crp", reason="the benchmark compares against zennit-crp")
    lines = run_benchmark("bench_pruning.py", "--quick", "--images", "16", "--batch-size", "8", "--threads", "1")
    assert len(lines) == 2 and "machine" in lines[0]
    row = lines[1]
    assert (row["images"], row["channels"], row["layers"]) == (16, 32, ["conv1", "conv2"])
    assert row["glocal_s"] > 0 and row["crp_one_pass_s"] > 0 and row["crp_per_channel_s"] > 0
    assert row["per_channel_over_glocal"] > 1  # 32 passes against one
    assert max(row["scores_max_rel_diff"].values()) < 1e-4
