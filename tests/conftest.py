"""Puts ``tests/`` on the import path (pytest's default import mode), so that every test can use ``real_models``;
and adds ``benchmarks/``, so that the tests use the one definition of the trained FashionMNIST model and its data
loaders, the benchmarks' ``fashion_mnist`` module (the benchmark scripts import it as their sibling)."""

import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.append(BENCHMARKS)
