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
from glocal.index.fingerprint import batch_digests, combine_digests
from glocal.index.scan import run_scan
from glocal.index.storage import IndexCorruptedError, IndexMismatchError, IndexNotFoundError, IndexStore

sys.path.insert(0, str(Path(__file__).parent))
import index_job

JOB = Path(__file__).parent / "index_job.py"


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_same_index(one: Path, other: Path, exact_sums: bool = True) -> None:
    a, b = IndexStore.open(one), IndexStore.open(other)
    assert a.complete and b.complete
    assert sorted(a.keys()) == sorted(b.keys())
    # the exact dataset fingerprint does not depend on how the scan was split or interrupted
    assert a.result == b.result and a.result["dataset"]["samples"] == 61
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
    assert not partial.complete and bool((partial.top("5").ids >= 0).any())
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


class Variant(torch.utils.data.Dataset):
    """``index_job``'s data with sample ``changed`` flipped, failing at ``fail_at``; wrapped in ``index_job.Slow``
    (the class the manifests name) by :func:`variant`."""

    def __init__(self, changed: int, fail_at: int | None) -> None:
        self.inner, self.changed, self.fail_at = index_job.dataset(), changed, fail_at

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        if index == self.fail_at:
            raise RuntimeError("the scan stops here")
        x, y = self.inner[index]
        return (x.flip(-1) if index == self.changed else x), y


def variant(changed: int = 5, fail_at: int | None = None) -> index_job.Slow:
    """Sample 5 is not one of the 16 that the quick fingerprint reads (0, 4, 8, ..., 60)."""
    return index_job.Slow(Variant(changed, fail_at), 0)


def test_dataset_fingerprint_covers_every_sample(reference):
    data = index_job.Slow(index_job.dataset(), 0)
    index = ConceptIndex.open(reference, dataset=data, progress=False)
    assert index.dataset_sha256 == combine_digests(61, 4, batch_digests(data, 4, progress=False))
    changed = variant()
    ConceptIndex.open(reference, dataset=changed, dataset_check="quick")  # 16 samples: the change goes unseen
    with pytest.raises(IndexMismatchError, match=r"samples 4-7 \(batch 1\)") as error:
        ConceptIndex.open(reference, dataset=changed, progress=False)
    assert error.value.differences == ["dataset: samples 4-7 (batch 1) changed"]


def test_resume_checks_the_scanned_samples_and_announces_itself(reference, tmp_path, caplog, capsys):
    directory = tmp_path / "index"
    data = index_job.Slow(index_job.dataset(), 0)
    with pytest.raises(RuntimeError, match="stops here"):  # interrupted in batch 10 (checkpoints after each batch)
        index_job.build(variant(changed=-1, fail_at=41), str(directory))
    with pytest.raises(IndexMismatchError, match=r"changed since the interrupted scan.*samples 4-7 \(batch 1\)"):
        index_job.build(variant(), str(directory))
    caplog.set_level("INFO", logger="glocal.index.build")
    capsys.readouterr()
    index_job.build(data, str(directory), progress=True)
    assert "resuming the scan" in caplog.text and "10 of 16 batches (40 samples) were done" in caplog.text
    bar = capsys.readouterr().err
    assert "glocal scan (resumed)" in bar and "10/16" in bar and " 0/16" not in bar
    assert_same_index(directory, reference)


def test_mismatch_is_summarised_with_the_full_list_attached(reference, tmp_path):
    from zennit.composites import EpsilonAlpha2Beta1Flat

    data = index_job.Slow(index_job.dataset(), 0)
    with pytest.raises(IndexMismatchError) as error:
        ConceptIndex.open(reference, model=index_job.model(), composite=EpsilonAlpha2Beta1Flat(), dataset=data)
    message = str(error.value)
    assert len(error.value.differences) > 3 and "composite.rules (" in message and "the first 3:" in message
    assert len(message.splitlines()) <= 8 and "`differences` attribute" in message
    assert all(line.split(":")[0] in message or line not in message for line in error.value.differences)


def test_zennit_crp_folder_says_how_to_import_it(tmp_path):
    for name in ("RelMax_sum_normed", "ActMax_sum_normed", "RelStats_sum_normed"):
        (tmp_path / name).mkdir()
    with pytest.raises(IndexNotFoundError, match=r"zennit-crp's FeatureVisualization.*import_zennit_crp"):
        ConceptIndex.open(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is empty") as error:
        ConceptIndex.open(empty)
    assert "IndexStore" not in str(error.value)
