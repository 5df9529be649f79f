"""Arrays on disk: array keys as paths, zarr hierarchies written and read, checkpoint ``.npz`` files read.

Array keys are ``/``-separated paths; each part may contain any character (layer names such as ``features.28``).
On disk, characters other than ``A-Z a-z 0-9 _ -`` are escaped as ``~XX`` (hex of their UTF-8 bytes).
"""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

from .errors import IndexCorruptedError

__all__ = ["array_keys", "create_groups", "key_path", "read_array", "read_npz", "write_arrays"]

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _escape(part: str) -> str:
    if not part:
        raise ValueError("array keys must not contain empty parts (such as 'a//b' or a leading or trailing '/')")
    return "".join(c if c in _SAFE else "".join(f"~{b:02X}" for b in c.encode()) for c in part)


def _unescape(part: str) -> str:
    data = bytearray()
    i = 0
    while i < len(part):
        if part[i] == "~":
            data.append(int(part[i + 1 : i + 3], 16))
            i += 3
        else:
            data += part[i].encode()
            i += 1
    return data.decode()


def key_path(key: str) -> str:
    """The relative on-disk path of the array ``key``."""
    if not isinstance(key, str):
        raise TypeError(f"array keys must be str such as 'features.28/relmax_sum/ids', got {type(key).__name__}")
    return "/".join(_escape(part) for part in key.split("/"))


def write_arrays(root: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as a new zarr hierarchy at ``root`` (which must not exist)."""
    store = LocalStore(root)
    zarr.open_group(store=store, mode="w-")
    groups: set[str] = set()
    items = []
    for key, value in arrays.items():
        path = key_path(key)
        parts = path.split("/")
        for depth in range(1, len(parts)):
            group = "/".join(parts[:depth])
            if group not in groups:
                zarr.open_group(store=store, path=group, mode="a")
                groups.add(group)
        data = np.asarray(value)
        if data.dtype.kind not in "biufc":
            raise TypeError(
                f"array {key!r} has dtype {data.dtype}; the index stores numeric and bool arrays only. "
                "Convert it (e.g. ids to int64) before writing."
            )
        items.append((path, data))
    _create_arrays(store, items)


def _create_arrays(store: LocalStore, items: Sequence[tuple[str, np.ndarray]]) -> None:
    """``zarr.create_array`` for each ``(path, data)``, all at once on zarr's event loop (each synchronous call costs
    a round trip to it, tens of milliseconds on a busy machine); one by one where zarr's internals differ."""
    try:
        from zarr.api import asynchronous
        from zarr.core.sync import sync
    except ImportError:  # pragma: no cover - another zarr 3 layout
        for path, data in items:
            zarr.create_array(store=store, name=path, data=data)
        return

    async def create_all() -> None:
        await asyncio.gather(*(asynchronous.create_array(store=store, name=path, data=data) for path, data in items))

    sync(create_all())


def create_groups(store: LocalStore, paths: Sequence[str]) -> None:
    """Create (or keep) the zarr groups ``paths``, all at once on zarr's event loop (see :func:`_create_arrays`)."""
    try:
        from zarr.api import asynchronous
        from zarr.core.sync import sync
    except ImportError:  # pragma: no cover - another zarr 3 layout
        for path in paths:
            zarr.open_group(store=store, path=path, mode="a")
        return

    async def create_all() -> None:
        await asyncio.gather(*(asynchronous.open_group(store=store, path=path, mode="a") for path in paths))

    sync(create_all())


def read_array(path: Path) -> np.ndarray:
    try:
        return np.asarray(zarr.open_array(store=LocalStore(path, read_only=True), mode="r")[...])
    except FileNotFoundError:
        raise
    except Exception as error:
        raise IndexCorruptedError(
            f"the array at {path} cannot be read ({type(error).__name__}: {error}); it is corrupted. It was left "
            "untouched: delete the index directory to build it again."
        ) from error


def read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise IndexCorruptedError(
            f"the checkpoint file {path} cannot be read ({error}); delete the checkpoint"
        ) from error


def array_keys(root: Path) -> list[str]:
    """The keys of all arrays below the zarr group at ``root``, sorted."""
    if not (root / "zarr.json").exists():
        return []
    try:
        group = zarr.open_group(store=LocalStore(root, read_only=True), mode="r")
        members = list(group.members(max_depth=None))
    except Exception as error:
        raise IndexCorruptedError(
            f"the zarr hierarchy at {root} cannot be read ({type(error).__name__}: {error}); it is corrupted. "
            "Delete the index directory to build it again."
        ) from error
    return sorted(
        "/".join(_unescape(part) for part in path.split("/")) for path, node in members if isinstance(node, zarr.Array)
    )
