"""Smoke test: benchmarks/bench_graph.py runs both cases with tiny settings, and both libraries agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_graph.py"
DATA = REPO.parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "fashion_cnn.pt").exists(), reason="needs ../shared/data/fashion_cnn.pt")
def test_bench_graph_quick(tmp_path: Path) -> None:
    pytest.importorskip("crp", reason="the benchmark compares against zennit-crp")
    pytest.importorskip("torchvision")
    json_out = tmp_path / "bench.jsonl"
    command = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--json-out", str(json_out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [row.get("case") for row in lines[1:]] == ["a", "b"]
    for row in lines[1:]:
        assert row["same_nodes_and_connections"] is True
        assert row["max_rel_diff"] <= 1e-5
        assert row["crp_s"] > 0 and row["glocal_s"] > 0 and row["native_s"] > 0
        assert row["nodes"] >= 3 and row["widths"] == [2, 2]
    assert [json.loads(line) for line in json_out.read_text().splitlines()] == lines
