"""Smoke test: benchmarks/bench_atlas.py runs end to end in quick mode and prints its JSON lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

CASE_KEYS = {
    "case",
    "n_images",
    "layers",
    "k",
    "batch_size",
    "region",
    "repeats",
    "threads",
    "atlas_s",
    "bare_s",
    "atlas_over_bare",
    "target_atlas_over_bare",
    "meets_target",
    "regional_s",
    "bare_regional_s",
    "regional_over_bare",
    "agreement",
    "top",
    "regional_top",
    "atlas_runs_s",
    "bare_runs_s",
    "regional_runs_s",
    "bare_regional_runs_s",
    "load_avg",
}


@pytest.mark.usefixtures("fashion_data")
def test_bench_atlas_quick(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    lines = run_benchmark("bench_atlas.py", "--quick", "--threads", "1")  # --quick: one repeat

    assert len(lines) == 2
    assert {"cpu", "cores", "torch", "zennit"} <= set(lines[0]["machine"])
    row = lines[1]
    assert set(row) >= CASE_KEYS, CASE_KEYS - set(row)
    assert (row["n_images"], row["k"], row["batch_size"], row["repeats"], row["threads"]) == (64, 5, 32, 1, 1)
    assert row["layers"] == ["conv1", "conv2", "parallel.0", "linear1"]
    assert row["region"] == "CentreSquare(size=14)"
    assert row["atlas_s"] > 0 and row["bare_s"] > 0 and row["regional_s"] > 0 and row["bare_regional_s"] > 0
    assert set(row["agreement"]) == set(row["layers"]) == set(row["top"])
    assert all(0 <= scores["jaccard"] <= 1 for scores in row["agreement"].values())
