"""Arrays on disk: keys escaped as paths and read back, zarr hierarchies round-tripped, unreadable files reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glocal.index.storage import IndexCorruptedError
from glocal.index.storage.arrays import array_keys, key_path, read_array, read_npz, write_arrays


def test_key_parts_are_escaped_and_read_back(tmp_path: Path) -> None:
    assert key_path("features.28/relmax_sum/ids") == "features~2E28/relmax_sum/ids"
    assert key_path("ß/a b") == "~C3~9F/a~20b"
    arrays = {"features.28/relmax_sum/ids": np.arange(3), "ß/a b": np.ones((2, 2), dtype=bool)}
    write_arrays(tmp_path / "arrays.zarr", arrays)
    assert array_keys(tmp_path / "arrays.zarr") == sorted(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(read_array(tmp_path / "arrays.zarr" / key_path(key)), value)


def test_bad_keys_and_dtypes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty parts"):
        key_path("a//b")
    with pytest.raises(TypeError, match="must be str"):
        key_path(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="numeric and bool arrays only"):
        write_arrays(tmp_path / "arrays.zarr", {"names": np.array(["a", "b"])})


def test_unreadable_files_are_reported_as_corrupted(tmp_path: Path) -> None:
    broken = tmp_path / "state.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(IndexCorruptedError, match="cannot be read"):
        read_npz(broken)
    with pytest.raises(FileNotFoundError):
        read_npz(tmp_path / "missing.npz")
    assert array_keys(tmp_path / "nothing.zarr") == []
