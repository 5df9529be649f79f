"""Smoke test: benchmarks/bench_index.py runs case (a) end to end with tiny settings and prints its JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_index.py"
DATA = REPO.parent / "shared" / "data"

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


@pytest.mark.skipif(not (DATA / "fashion_cnn.pt").exists(), reason="needs ../shared/data/fashion_cnn.pt")
def test_bench_index_case_a_quick(tmp_path: Path) -> None:
    pytest.importorskip("crp", reason="the benchmark compares against zennit-crp")
    json_out = tmp_path / "bench.jsonl"
    command = [
        sys.executable,
        str(SCRIPT),
        "--cases",
        "a",
        "--quick",
        "--threads",
        "1",
        "--json-out",
        str(json_out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
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
    assert [json.loads(line) for line in json_out.read_text().splitlines()] == lines
