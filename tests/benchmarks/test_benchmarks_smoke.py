"""Smoke test: benchmarks/bench_engine.py runs end to end (case d, tiny settings) and prints its JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_engine.py"
DATA = REPO.parent / "shared" / "data"

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


@pytest.mark.skipif(not (DATA / "fashion_cnn.pt").exists(), reason="needs ../shared/data/fashion_cnn.pt")
def test_bench_engine_case_d_quick(tmp_path: Path) -> None:
    pytest.importorskip("crp", reason="the benchmark compares against zennit-crp")
    json_out = tmp_path / "bench.jsonl"
    command = [
        sys.executable,
        str(SCRIPT),
        "--cases",
        "d",
        "--quick",
        "--images",
        "4",
        "--concepts",
        "2",
        "--threads",
        "1",
        "--json-out",
        str(json_out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 2
    assert {"cpu", "cores", "torch", "zennit"} <= set(lines[0]["machine"])
    row = lines[1]
    assert set(row) >= CASE_KEYS, CASE_KEYS - set(row)
    assert row["case"] == "d"
    assert (row["n_images"], row["n_concepts"], row["repeats"]) == (4, 2, 1)
    assert row["glocal_s"] > 0 and row["crp_s"] > 0
    assert row["heatmap_max_rel_diff"] < 1e-4
    assert [json.loads(line) for line in json_out.read_text().splitlines()] == lines
