"""Smoke test: benchmarks/bench_index.py runs case (a) end to end with tiny settings and prints its JSON lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

CASE_KEYS = {
    "case",
    "n_images",
    "layers",
    "ref_layer",
    "concepts",
    "refs_per_concept",
    "k",
    "repeats",
    "crp_s",
    "glocal_s",
    "speedup",
    "target_speedup",
    "crp_scan_s",
    "crp_refs_s",
    "glocal_scan_s",
    "glocal_refs_s",
    "bare_s",
    "bare_glocal_s",
    "scan_over_bare",
    "target_scan_over_bare",
    "crp_peak_mb",
    "glocal_peak_mb",
    "glocal_scan_peak_mb_by_n",
    "crp_runs_s",
    "glocal_runs_s",
    "bare_runs_s",
    "load_avg",
}


@pytest.mark.usefixtures("fashion_data")
def test_bench_index_case_a_quick(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    pytest.importorskip("crp", reason="the benchmark compares against zennit-crp")
    lines = run_benchmark("bench_index.py", "--cases", "a", "--quick", "--threads", "1")

    assert len(lines) == 2
    assert {"cpu", "cores", "torch", "zennit", "zennit_crp"} <= set(lines[0]["machine"])
    row = lines[1]
    assert set(row) >= CASE_KEYS, CASE_KEYS - set(row)
    assert row["case"] == "a"
    assert (row["n_images"], row["k"], row["repeats"]) == (64, 40, 1)
    assert row["layers"] == ["conv1", "conv2", "parallel.0"]
    assert len(row["concepts"]) == 8
    assert row["crp_n_refs"] == row["glocal_n_refs"] == 8 * row["refs_per_concept"]
    assert row["crp_s"] > 0 and row["glocal_s"] > 0 and row["bare_s"] > 0
    assert set(row["glocal_scan_peak_mb_by_n"]) == {"32", "64"}
