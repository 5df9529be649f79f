"""Smoke test: benchmarks/bench_engine.py runs end to end (case d, tiny settings) and prints its JSON lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

CASE_KEYS = {
    "case",
    "layer",
    "n_images",
    "n_concepts",
    "repeats",
    "glocal_s",
    "crp_s",
    "speedup",
    "target_speedup",
    "meets_target",
    "glocal_peak_mb",
    "crp_peak_mb",
    "heatmap_max_rel_diff",
    "crp_option",
    "crp_options",
    "glocal_runs_s",
    "crp_runs_s",
    "load_avg",
}


@pytest.mark.usefixtures("fashion_data")
def test_bench_engine_case_d_quick(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    pytest.importorskip("crp", reason="the benchmark compares against zennit-crp")
    tiny = ("--cases", "d", "--quick", "--images", "4", "--concepts", "2", "--threads", "1")
    lines = run_benchmark("bench_engine.py", *tiny)

    assert len(lines) == 2
    assert {"cpu", "cores", "torch", "zennit"} <= set(lines[0]["machine"])
    row = lines[1]
    assert set(row) >= CASE_KEYS, CASE_KEYS - set(row)
    assert row["case"] == "d"
    assert (row["n_images"], row["n_concepts"], row["repeats"]) == (4, 2, 1)
    assert row["glocal_s"] > 0 and row["crp_s"] > 0
    assert row["heatmap_max_rel_diff"] < 1e-4
