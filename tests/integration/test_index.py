"""The concept index end to end: equal to the in-memory scan, resumable after SIGKILL, distributed over 2 processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from zennit.composites import EpsilonPlusFlat

from glocal.index import ConceptIndex, build_index
from glocal.index.scan import run_scan
from glocal.storage import IndexCorruptedError, IndexMismatchError, IndexStore

sys.path.insert(0, str(Path(__file__).parent))
import index_job

JOB = Path(__file__).parent / "index_job.py"


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_same_index(one: Path, other: Path, exact_sums: bool = True) -> None:
    a, b = IndexStore.open(one), IndexStore.open(other)
    assert a.complete and b.complete
    assert sorted(a.keys()) == sorted(b.keys())
    for key in a:
        if key.endswith("relevance_sum") and not exact_sums:
            np.testing.assert_allclose(a.read(key), b.read(key), rtol=1e-12, atol=1e-15)
        else:
            np.testing.assert_array_equal(a.read(key), b.read(key), err_msg=key)
    for layer in ("2", "5"):
        np.testing.assert_array_equal(
            ConceptIndex.open(one).matrix(layer)[:], ConceptIndex.open(other).matrix(layer)[:], err_msg=layer
        )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted single-process index, built in a subprocess like the others."""
    directory = tmp_path_factory.mktemp("reference") / "index"
    subprocess.run([sys.executable, str(JOB), str(directory)], check=True, timeout=300)
    return directory


def test_index_equals_in_memory_scan(reference):
    torch.set_num_threads(1)
    state = run_scan(
        index_job.model(), EpsilonPlusFlat(), index_job.dataset(), ["2", "5"], k=4, batch_size=4, progress=False
    )
    index = ConceptIndex.open(
        reference, model=index_job.model(), composite=EpsilonPlusFlat(), dataset=index_job.Slow(index_job.dataset(), 0)
    )
    assert index.complete
    for layer in ("2", "5"):
        assert state.statistics is not None
        for key, value in state.statistics[layer].arrays().items():
            np.testing.assert_array_equal(IndexStore.open(reference).read(f"{layer}/{key}"), value, err_msg=key)
        ids, scores, positions = index.samples(layer, 3, "relmax_sum", n=2)
        top = state.statistics[layer].top["relmax_sum"]
        assert ids == top.ids[3, :2].tolist() and scores == top.scores[3, :2].tolist()
        assert positions == top.positions[3, :2].tolist()
        # the matrix holds every sample's concept relevance (float16)
        matrix = index.matrix(layer)[:]
        assert matrix.shape == (61, 8) and matrix.dtype == np.float16
        assert np.isclose(matrix[ids[0], 3], scores[0], rtol=2e-3, atol=1e-6)
    classes = index.classes("5", 3, n=5)
    assert len(classes) == 5 and classes == sorted(classes, key=lambda c: -c[1])


def test_resume_after_sigkill_equals_uninterrupted(reference, tmp_path):
    directory = tmp_path / "index"
    process = subprocess.Popen([sys.executable, str(JOB), str(directory), "--pause", "0.03"])
    pointer = directory / "ranks" / "0-of-1" / "checkpoints" / "LATEST"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if pointer.exists() and "ckpt-" in pointer.read_text() and int(pointer.read_text().strip().split("-")[-1]) >= 4:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the scan finished before it could be killed; make it slower"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not IndexStore.open(directory).complete
    # a reader can open the half-built index: it shows the last checkpoint
    partial = ConceptIndex.open(directory)
    assert not partial.complete and partial.samples("5", 0)[0]
    subprocess.run([sys.executable, str(JOB), str(directory)], check=True, timeout=300)
    assert_same_index(directory, reference)


def test_two_process_distributed_scan_equals_single_process(reference, tmp_path):
    directory = tmp_path / "index"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            str(JOB),
            str(directory),
            "--distributed",
        ],
        check=True,
        timeout=300,
        env=env,
    )
    assert sorted(p.name for p in (directory / "ranks").iterdir()) == ["0-of-2", "1-of-2"]
    assert_same_index(directory, reference, exact_sums=False)


def test_mismatched_or_corrupted_index_is_an_error_and_untouched(reference, tmp_path):
    directory = tmp_path / "copy"
    import shutil

    shutil.copytree(reference, directory)
    before = tree_bytes(directory)
    other = index_job.model()
    with torch.no_grad():
        other[0].weight[0, 0, 0, 0] += 1.0
    with pytest.raises(IndexMismatchError, match="model"):
        build_index(
            other,
            EpsilonPlusFlat(),
            index_job.Slow(index_job.dataset(), 0),
            ["2", "5"],
            directory,
            k=4,
            batch_size=4,
            progress=False,
        )
    with pytest.raises(IndexMismatchError, match="k"):
        build_index(
            index_job.model(),
            EpsilonPlusFlat(),
            index_job.Slow(index_job.dataset(), 0),
            ["2", "5"],
            directory,
            k=5,
            batch_size=4,
            progress=False,
        )
    with pytest.raises(IndexMismatchError, match="model"):
        ConceptIndex.open(directory, model=other)
    assert tree_bytes(directory) == before
    (directory / "manifest.json").write_text("{ not json")
    before = tree_bytes(directory)
    with pytest.raises(IndexCorruptedError):
        build_index(
            index_job.model(),
            EpsilonPlusFlat(),
            index_job.Slow(index_job.dataset(), 0),
            ["2", "5"],
            directory,
            k=4,
            batch_size=4,
            progress=False,
        )
    assert tree_bytes(directory) == before
