"""What every smoke test of a benchmark script does: run the script in a subprocess and read its JSON lines.

The tests here check each script's real output with tiny settings (``--quick`` and friends); the numbers of a full run
are the scripts' business. A script that needs the trained FashionMNIST model (``../shared/data`` beside the
checkout) is skipped without it: ``@pytest.mark.usefixtures("fashion_data")``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fashion_mnist

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
# a quick run takes seconds to a minute alone; a shared machine under load has needed several times that
TIMEOUT_S = 600


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BENCHMARKS / script), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture
def run_script() -> Callable[..., str]:
    """``run_script(script, *args)``: run ``benchmarks/<script>`` with ``args`` from the repository root and return
    its stdout; the test fails (showing the end of the script's stderr) unless the script exits with 0."""
    return lambda script, *args: _run(script, *args).stdout


@pytest.fixture
def run_benchmark(tmp_path: Path) -> Callable[..., list[dict[str, Any]]]:
    """``run_benchmark(script, *args)``: run the script with ``args`` and ``--json-out`` into a temporary file, check
    that the file holds the same JSON lines as stdout, and return them (one dict per line)."""

    def run(script: str, *args: str) -> list[dict[str, Any]]:
        json_out = tmp_path / f"{Path(script).stem}.jsonl"
        stdout = _run(script, *args, "--json-out", str(json_out)).stdout
        lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        assert [json.loads(line) for line in json_out.read_text().splitlines()] == lines
        return lines

    return run


@pytest.fixture
def fashion_data() -> None:
    """Skip the test when the FashionMNIST model and images are not beside the checkout."""
    if not fashion_mnist.available():
        pytest.skip(f"needs the FashionMNIST model and images in {fashion_mnist.DATA_DIR}")
