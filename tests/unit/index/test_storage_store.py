"""The index directory: round trips, atomic checkpoints, refusing to touch a mismatched or corrupted index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import glocal.index.storage.files as storage_files
import glocal.index.storage.store as storage
from glocal.errors import GlocalError
from glocal.index.storage import IndexCorruptedError, IndexKeyError, IndexMismatchError, IndexReadOnlyError, IndexStore

MANIFEST = {"model": {"class": "VGG", "sha256": "a" * 64}, "layers": ["features.28", "features.30"], "k": 8}


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_results_round_trip(tmp_path: Path) -> None:
    store = IndexStore.create(tmp_path / "index", MANIFEST)
    arrays = {
        "features.28/relmax_sum/ids": np.arange(12, dtype=np.int64).reshape(3, 4),
        "features.28/relmax_sum/scores": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
        "features.30/actmax/mask": np.array([True, False]),
        "odd name ~%/x": np.float64(2.5),
    }
    store.write_results(arrays)
    assert not store.complete
    store.mark_complete()
    reader = IndexStore.open(tmp_path / "index")
    assert reader.complete and reader.manifest == MANIFEST
    assert reader.keys() == sorted(arrays)
    for key, value in arrays.items():
        read = reader.read(key)
        assert read.dtype == np.asarray(value).dtype and np.array_equal(read, value)
    # dots are escaped on disk, so a layer name never looks like a file extension
    assert (tmp_path / "index" / "index.zarr" / "features~2E28" / "relmax_sum" / "ids").is_dir()
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["k"] == 8


def test_replacing_a_result_and_missing_keys(tmp_path: Path) -> None:
    store = IndexStore.create(tmp_path, MANIFEST)
    store.write_results({"a/b": np.zeros(3)})
    store.write_results({"a/b": np.ones(5)})
    assert np.array_equal(store.read("a/b"), np.ones(5))
    with pytest.raises(IndexKeyError, match=r"holds no array 'a/c'; it holds 'a/b'"):
        store.read("a/c")
    assert list(os.listdir(tmp_path / "staging")) == []


def test_checkpoint_round_trip_keeps_only_the_latest(tmp_path: Path) -> None:
    store = IndexStore.create(tmp_path, MANIFEST)
    assert store.read_checkpoint() is None
    store.write_checkpoint(10, {"features.28/top/ids": np.arange(4), "seen": np.int64(10)}, {"done": 10})
    store.write_checkpoint(20, {"features.28/top/ids": np.arange(4) + 1, "seen": np.int64(20)}, {"done": 20})
    checkpoint = IndexStore.open(tmp_path).read_checkpoint()
    assert checkpoint is not None
    arrays, progress = checkpoint
    assert progress == {"done": 20} and int(arrays["seen"]) == 20
    assert np.array_equal(arrays["features.28/top/ids"], np.arange(4) + 1)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["LATEST", "ckpt-20"]
    with pytest.raises(ValueError, match="steps must grow"):
        store.write_checkpoint(20, {}, {})


def test_crash_before_pointer_replacement_keeps_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = IndexStore.create(tmp_path, MANIFEST)
    store.write_checkpoint(1, {"x": np.zeros(2)}, {"done": 1})
    real_replace = os.replace

    def crash_on_pointer(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == "LATEST":
            raise KeyboardInterrupt("simulated crash (SIGKILL) just before LATEST is replaced")
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", crash_on_pointer)
    with pytest.raises(KeyboardInterrupt):
        store.write_checkpoint(2, {"x": np.ones(2)}, {"done": 2})
    monkeypatch.setattr(storage.os, "replace", real_replace)
    assert (tmp_path / "checkpoints" / "ckpt-2").is_dir()  # fully written, but never named by LATEST
    resumed = IndexStore.create(tmp_path, MANIFEST)
    checkpoint = resumed.read_checkpoint()
    assert checkpoint is not None and checkpoint[1] == {"done": 1} and np.array_equal(checkpoint[0]["x"], np.zeros(2))
    # the resumed run writes step 2 again: the orphan is replaced and the old checkpoint removed
    resumed.write_checkpoint(2, {"x": np.full(2, 7.0)}, {"done": 2})
    checkpoint = IndexStore.open(tmp_path).read_checkpoint()
    assert checkpoint is not None and np.array_equal(checkpoint[0]["x"], np.full(2, 7.0))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["LATEST", "ckpt-2"]


def test_half_written_checkpoint_without_pointer_is_ignored(tmp_path: Path) -> None:
    store = IndexStore.create(tmp_path, MANIFEST)
    store.write_checkpoint(5, {"x": np.arange(3)}, {"done": 5})
    half = tmp_path / "checkpoints" / "ckpt-9"
    (half / "arrays.zarr").mkdir(parents=True)
    (half / "arrays.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_ty')  # truncated by the crash
    (tmp_path / "checkpoints" / ".ckpt-11.tmp-abc").mkdir()
    checkpoint = store.read_checkpoint()
    assert checkpoint is not None and checkpoint[1] == {"done": 5}


def test_mismatch_lists_differences_and_touches_nothing(tmp_path: Path) -> None:
    store = IndexStore.create(tmp_path, MANIFEST)
    store.write_results({"features.28/relmax_sum/ids": np.arange(3)})
    store.write_checkpoint(3, {"x": np.arange(3)}, {"done": 3})
    before = snapshot(tmp_path)
    other = {**MANIFEST, "model": {"class": "VGG", "sha256": "b" * 64}, "k": 16}
    with pytest.raises(IndexMismatchError) as caught:
        IndexStore.create(tmp_path, other)
    message = str(caught.value)
    assert f"model.sha256: the index has {'a' * 64!r}, the given manifest has {'b' * 64!r}" in message
    assert "k: the index has 8, the given manifest has 16" in message
    assert "layers" not in message
    assert "another directory" in message and "delete" in message
    assert "holds an index made with other inputs or settings than those given now" in message
    assert isinstance(caught.value, GlocalError) and isinstance(caught.value, ValueError)
    assert snapshot(tmp_path) == before
    # an equal manifest resumes
    assert IndexStore.create(tmp_path, dict(MANIFEST)).read_checkpoint() is not None
    assert snapshot(tmp_path) == before


def test_corrupted_manifest_raises_and_overwrites_nothing(tmp_path: Path) -> None:
    IndexStore.create(tmp_path, MANIFEST).write_results({"a": np.arange(2)})
    (tmp_path / "manifest.json").write_bytes(b'{"model": {"class": "VG')
    before = snapshot(tmp_path)
    with pytest.raises(IndexCorruptedError, match=r"manifest\.json is not valid JSON"):
        IndexStore.create(tmp_path, MANIFEST)
    with pytest.raises(IndexCorruptedError, match=r"manifest\.json"):
        IndexStore.open(tmp_path)
    assert snapshot(tmp_path) == before


def test_corrupted_array_names_the_file(tmp_path: Path) -> None:
    store = IndexStore.create(tmp_path, MANIFEST)
    store.write_results({"layer.1/ids": np.arange(100)})
    chunk = next(
        p for p in (tmp_path / "index.zarr" / "layer~2E1" / "ids").rglob("*") if p.is_file() and p.parent.name != "ids"
    )
    chunk.write_bytes(b"garbage")
    with pytest.raises(IndexCorruptedError, match=r"layer~2E1/ids"):
        store.read("layer.1/ids")


def test_non_index_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(IndexCorruptedError, match="not an index directory"):
        IndexStore.create(tmp_path, MANIFEST)
    assert snapshot(tmp_path) == {"notes.txt": b"mine"}
    with pytest.raises(FileNotFoundError, match="holds no glocal index"):
        IndexStore.open(tmp_path)


def test_reader_is_read_only(tmp_path: Path) -> None:
    IndexStore.create(tmp_path, MANIFEST)
    reader = IndexStore.open(tmp_path)
    with pytest.raises(IndexReadOnlyError):
        reader.write_results({"a": np.zeros(1)})
    with pytest.raises(IndexReadOnlyError):
        reader.write_checkpoint(1, {}, {})


def test_open_rows_fills_by_batches_and_reads_lazily(tmp_path: Path) -> None:
    store = IndexStore.create(tmp_path, MANIFEST)
    rows = store.open_rows("features.28/relevance", (1000, 64), np.float16)
    expected = np.random.default_rng(0).random((1000, 64)).astype(np.float16)
    for start in range(0, 1000, 128):
        rows[start : start + 128] = expected[start : start + 128]
    assert rows.chunks[0] < 1000 or rows.chunks == (1000, 64)
    lazy = IndexStore.open(tmp_path).rows("features.28/relevance")
    assert lazy.shape == (1000, 64) and lazy.dtype == np.float16
    assert np.array_equal(lazy[500:510], expected[500:510])
    # resuming reopens the same array; another shape is refused
    again = IndexStore.create(tmp_path, MANIFEST).open_rows("features.28/relevance", (1000, 64), np.float16)
    assert np.array_equal(again[999], expected[999])
    with pytest.raises(ValueError, match="already holds"):
        store.open_rows("features.28/relevance", (1000, 65), np.float16)


READER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from glocal.index.storage import IndexStore

    store = IndexStore.open(sys.argv[1])
    seen = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        checkpoint = store.read_checkpoint()
        if checkpoint is None:
            continue
        arrays, progress = checkpoint
        step = progress["step"]
        assert np.array_equal(arrays["a/x"], np.full(50, step)), step
        assert np.array_equal(arrays["b.c/y"], np.arange(step + 1)), step
        seen.add(step)
        if step == int(sys.argv[2]):
            break
    print(len(seen))
    """
)


def test_reader_process_reads_while_writer_writes(tmp_path: Path) -> None:
    writer = IndexStore.create(tmp_path, MANIFEST)
    last = 30
    writer.write_checkpoint(0, {"a/x": np.full(50, 0), "b.c/y": np.arange(1)}, {"step": 0})
    env = {**os.environ, "PYTHONPATH": str(Path(storage.__file__).parents[3])}
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path), str(last)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    for step in range(1, last + 1):
        writer.write_checkpoint(step, {"a/x": np.full(50, step), "b.c/y": np.arange(step + 1)}, {"step": step})
    out, err = reader.communicate(timeout=90)
    assert reader.returncode == 0, err.decode()
    assert int(out) >= 1, "the reader saw no checkpoint"


@pytest.mark.parametrize("syncfs", [True, False])
def test_results_are_flushed_with_a_few_syncs_not_one_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    if syncfs and storage_files._syncfs is None:
        pytest.skip("this platform has no syncfs")
    if not syncfs:
        monkeypatch.setattr(storage_files, "_syncfs", None)
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    store = IndexStore.create(tmp_path / "index", MANIFEST)
    arrays = {f"layer{i}/{part}/ids": np.full((3, 4), i, dtype=np.int64) for i in range(6) for part in ("a", "b")}
    calls.clear()
    store.write_results(arrays)
    files = sum(len(names) + len(dirs) for _, dirs, names in os.walk(tmp_path / "index" / "index.zarr"))
    if syncfs:
        assert len(calls) <= 2  # one syncfs for the data, one for the renames: no fsync per file
    else:
        assert len(calls) >= files // 2  # the portable fallback flushes file by file
    store.mark_complete()
    reader = IndexStore.open(tmp_path / "index")
    assert all((reader.read(key) == value).all() for key, value in arrays.items())
