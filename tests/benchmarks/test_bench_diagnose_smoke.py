"""Smoke test: benchmarks/diagnose_models.py runs its FashionMNIST cases and prints the numbers of the docs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.mark.usefixtures("fashion_data")
def test_bench_diagnose_fashion_cases(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    lines = run_benchmark("diagnose_models.py", "--cases", "fashion-auto,fashion-bare", "--threads", "1")
    machine, auto, bare = lines
    assert "machine" in machine
    assert (auto["case"], bare["case"]) == ("fashion-auto", "fashion-bare")
    assert set(auto) >= {"kept", "kept_range", "findings", "largest", "completeness", "seconds", "load_avg"}
    assert auto["kept"] == pytest.approx(1.0, abs=0.01) and "batch_norm" not in auto["findings"]
    assert bare["findings"]["batch_norm"] == 3  # bn1, bn2 and the parallel branch's, unmerged without a canonizer
