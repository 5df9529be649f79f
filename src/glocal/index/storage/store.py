"""The index directory (:class:`IndexStore`): manifest, final arrays, checkpoints, staging and status.

An index directory holds::

    <dir>/manifest.json                what produced the index, plus "status": "in-progress" | "complete"
    <dir>/index.zarr/                  the final arrays, as "<group>/<name>" (zarr v3)
    <dir>/checkpoints/ckpt-<step>/     arrays.zarr/ and progress.json of the last checkpoint
    <dir>/checkpoints/LATEST           the name of the last complete checkpoint directory

Every change is atomic (:mod:`.files`), so a reader in another process sees the last complete checkpoint and only
fully written final arrays.

One idea, kept whole (over 400 lines): the class is the directory's protocol, and its methods share the layout's
names and the order in which writes are made durable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from .arrays import array_keys, create_groups, key_path, read_array, read_npz, write_arrays
from .errors import IndexCorruptedError, IndexKeyError, IndexNotFoundError, IndexReadOnlyError, mismatch_error
from .files import fsync_each, fsync_path, fsync_tree, read_json, sync_filesystem, to_json, write_file_atomic

__all__ = ["IndexStore"]

_MANIFEST = "manifest.json"
_ARRAYS = "index.zarr"
_CHECKPOINTS = "checkpoints"
_LATEST = "LATEST"
_STAGING = "staging"
_PROGRESS = "progress.json"
_CHECKPOINT_ARRAYS = "state.npz"  # one file: checkpoints are frequent, zarr's per-array cost is not needed
_STATUS = "status"
_RESULT = "result"  # what the writer learnt by the end (e.g. the exact dataset fingerprint); set by mark_complete
_RESERVED = (_STATUS, _RESULT)
_IN_PROGRESS = "in-progress"
_COMPLETE = "complete"
_ROW_CHUNK_BYTES = 4 * 2**20


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _manifest_differences(existing: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    old, new = _flatten(dict(existing)), _flatten(dict(given))
    missing = "(not set)"
    return [
        f"{key}: the index has {old.get(key, missing)!r}, the given manifest has {new.get(key, missing)!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    ]


_ZENNIT_CRP_FOLDER = re.compile(r"^(RelMax|ActMax|RelStats|ActStats)_(sum|max)_(normed|unnormed)$")


def _not_an_index(directory: Path) -> str:
    """Why ``directory`` is not an index, and what to do."""
    if not directory.exists():
        return f"{directory} does not exist; check the path, or build an index there with glocal.index.build_index"
    if not directory.is_dir():
        return f"{directory} is a file, not an index directory; give the directory that glocal.index.build_index wrote"
    entries = sorted(entry.name for entry in directory.iterdir())
    crp = [name for name in entries if _ZENNIT_CRP_FOLDER.match(name) and (directory / name).is_dir()]
    if crp:
        shown = ", ".join(f"{name}/" for name in crp[:4]) + (", ..." if len(crp) > 4 else "")
        return (
            f"{directory} is an output folder of zennit-crp's FeatureVisualization ({shown}), not a glocal index. "
            f"Import it once with glocal.compat.import_zennit_crp({str(directory)!r}, <new index directory>) and "
            "open that directory (glocal.index.ConceptIndex.open)."
        )
    if not entries:
        return (
            f"{directory} is empty: no index has been built there yet. Build one with glocal.index.build_index(model, "
            "composite, dataset, layers, directory), or check the path"
        )
    nested = [name for name in entries if (directory / name / _MANIFEST).exists()]
    if nested:
        return (
            f"{directory} holds no index itself (no {_MANIFEST}), but {', '.join(nested[:3])} inside it does: open "
            f"{directory / nested[0]}"
        )
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    return (
        f"{directory} holds no glocal index (no {_MANIFEST}; it holds {shown}). Check the path, or build an index "
        "with glocal.index.build_index"
    )


class IndexStore:
    """An index directory: manifest, final arrays and checkpoints.

    Use :meth:`create` to write (or resume writing) an index and :meth:`open` to read one, also while another
    process writes it.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> directory = tempfile.mkdtemp() + "/index"
    >>> store = IndexStore.create(directory, {"model": {"sha256": "abc"}})
    >>> store.write_results({"features.28/relmax_sum/ids": np.arange(3)})
    >>> store.mark_complete()
    >>> reader = IndexStore.open(directory)
    >>> reader.complete, reader.keys(), reader.read("features.28/relmax_sum/ids").tolist()
    (True, ['features.28/relmax_sum/ids'], [0, 1, 2])
    """

    def __init__(self, path: Path, manifest: dict[str, Any], writable: bool) -> None:
        self._path = path
        self._manifest = manifest
        self._writable = writable

    # ---------------------------------------------------------------------------------------------------- opening

    @classmethod
    def create(cls, path: str | os.PathLike[str], manifest: Mapping[str, Any]) -> IndexStore:
        """Create the index directory at ``path``, or open it for writing if it holds an index of ``manifest``.

        Parameters
        ----------
        path
            The index directory; parent directories are created as needed.
        manifest
            What produces the index (JSON-serialisable; e.g. model, composite and dataset fingerprints and settings).
            The key ``"status"`` is reserved.

        Raises
        ------
        IndexMismatchError
            ``path`` holds an index with a different manifest; nothing on disk is changed.
        IndexCorruptedError
            ``path`` holds an unreadable manifest, or is a non-empty directory that is not an index.
        """
        directory = Path(path)
        given = dict(manifest)
        for reserved in _RESERVED:
            if reserved in given:
                raise ValueError(f"the manifest key {reserved!r} is reserved for the index itself; rename that key")
        given = json.loads(to_json(given, "manifest"))  # compare as stored (tuples become lists)
        manifest_path = directory / _MANIFEST
        if manifest_path.exists():
            stored = cls._load_manifest(manifest_path)
            existing = {k: v for k, v in stored.items() if k not in _RESERVED}
            differences = _manifest_differences(existing, given)
            if differences:
                raise mismatch_error(
                    f"{directory} holds an index made with other inputs or settings than those given now",
                    differences,
                    "Nothing was changed. Choose another directory, or delete this one to build the index anew.",
                )
        else:
            if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
                reason = _not_an_index(directory)
                crp = " It is a zennit-crp output folder: " + reason if "zennit-crp" in reason else ""
                raise IndexCorruptedError(
                    f"{directory} exists and is not empty, but has no {_MANIFEST}: it is not an index directory (or "
                    f"its manifest was lost). Nothing was changed. Choose another directory, or delete this one.{crp}"
                )
            directory.mkdir(parents=True, exist_ok=True)
            write_file_atomic(manifest_path, to_json({**given, _STATUS: _IN_PROGRESS}, "manifest"))
        (directory / _CHECKPOINTS).mkdir(exist_ok=True)
        (directory / _STAGING).mkdir(exist_ok=True)
        if not (directory / _ARRAYS / "zarr.json").exists():
            zarr.open_group(store=LocalStore(directory / _ARRAYS), mode="a")
        return cls(directory, given, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> IndexStore:
        """Open the index at ``path`` for reading; safe while another process writes it.

        Raises
        ------
        IndexNotFoundError
            ``path`` holds no index (a :class:`FileNotFoundError`); the message says what it holds instead (e.g. the
            output folder of zennit-crp's ``FeatureVisualization``, and how to import it).
        IndexCorruptedError
            The manifest cannot be read.
        """
        directory = Path(path)
        manifest_path = directory / _MANIFEST
        if not manifest_path.exists():
            raise IndexNotFoundError(_not_an_index(directory))
        stored = cls._load_manifest(manifest_path)
        return cls(directory, {k: v for k, v in stored.items() if k not in _RESERVED}, writable=False)

    @staticmethod
    def _load_manifest(path: Path) -> dict[str, Any]:
        stored = read_json(path)
        if not isinstance(stored, dict) or stored.get(_STATUS) not in (_IN_PROGRESS, _COMPLETE):
            raise IndexCorruptedError(
                f"{path} is not an index manifest (expected a JSON object with 'status' 'in-progress' or "
                "'complete'). It was left untouched: delete the index directory to build it again."
            )
        return stored

    # ---------------------------------------------------------------------------------------------------- state

    @property
    def path(self) -> Path:
        """The index directory."""
        return self._path

    @property
    def manifest(self) -> dict[str, Any]:
        """What produced the index (without its status); a copy."""
        return json.loads(json.dumps(self._manifest))

    @property
    def result(self) -> dict[str, Any]:
        """What the writer stored when it marked the index complete (:meth:`mark_complete`); empty before."""
        return dict(self._load_manifest(self._path / _MANIFEST).get(_RESULT) or {})

    @property
    def complete(self) -> bool:
        """Whether the index is complete; read from disk each time, so a reader sees a writer finish."""
        return bool(self._load_manifest(self._path / _MANIFEST)[_STATUS] == _COMPLETE)

    def _require_writable(self) -> None:
        if not self._writable:
            raise IndexReadOnlyError(
                f"the index at {self._path} was opened for reading (IndexStore.open); "
                "use IndexStore.create with the same manifest to write to it"
            )

    # ---------------------------------------------------------------------------------------------------- checkpoints

    def _latest_name(self) -> str | None:
        pointer = self._path / _CHECKPOINTS / _LATEST
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not name.startswith("ckpt-") or "/" in name:
            raise IndexCorruptedError(
                f"{pointer} should name a checkpoint directory such as 'ckpt-100', but holds {name[:80]!r}. "
                "Delete the file to start over from no checkpoint."
            )
        return name

    def write_checkpoint(self, step: int, arrays: Mapping[str, np.ndarray], progress: Mapping[str, Any]) -> None:
        """Save a checkpoint atomically: either it or the previous one is readable after a crash at any moment.

        Parameters
        ----------
        step
            A number that grows with each checkpoint (e.g. samples done); names the directory ``ckpt-<step>``.
        arrays
            The state to save, by key (``/``-separated).
        progress
            JSON-serialisable bookkeeping (e.g. samples done, random state).
        """
        self._require_writable()
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        latest = self._latest_name()
        if latest is not None and int(latest.removeprefix("ckpt-")) >= step:
            raise ValueError(
                f"checkpoint steps must grow: the last checkpoint is {latest}, the new one would be step {step}; "
                "pass a larger step (e.g. the number of samples done)"
            )
        progress_text = to_json(dict(progress), "progress")
        checkpoints = self._path / _CHECKPOINTS
        name = f"ckpt-{int(step)}"
        tmp = checkpoints / f".{name}.tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            with open(tmp / _CHECKPOINT_ARRAYS, "wb") as handle:
                state: dict[str, Any] = {key: np.asarray(value) for key, value in arrays.items()}
                np.savez(handle, **state)
            (tmp / _PROGRESS).write_text(progress_text, encoding="utf-8")
            fsync_tree(tmp)
            if (checkpoints / name).exists():  # left by a crash before LATEST named it: never readable, safe to drop
                shutil.rmtree(checkpoints / name)
            os.replace(tmp, checkpoints / name)
            fsync_path(checkpoints)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        write_file_atomic(checkpoints / _LATEST, name)
        for entry in checkpoints.iterdir():
            if entry.name not in (name, _LATEST) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    def read_checkpoint(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The arrays and progress of the last complete checkpoint, or ``None`` if there is none."""
        for _ in range(10):
            name = self._latest_name()
            if name is None:
                return None
            directory = self._path / _CHECKPOINTS / name
            try:
                progress = read_json(directory / _PROGRESS)
                arrays = read_npz(directory / _CHECKPOINT_ARRAYS)
            except (FileNotFoundError, IndexCorruptedError):
                if self._latest_name() != name:  # a writer replaced the checkpoint while we read it: read the new one
                    continue
                raise
            return arrays, progress
        raise IndexCorruptedError(
            f"the checkpoint in {self._path / _CHECKPOINTS} changed under every one of 10 attempts to read it; "
            "try again, or wait for the writer to finish"
        )

    # ---------------------------------------------------------------------------------------------------- results

    def write_results(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Write final arrays, each atomically; an existing array of the same key is replaced.

        Parameters
        ----------
        arrays
            By key such as ``"features.28/relmax_sum/ids"``.
        """
        self._require_writable()
        if not arrays:
            return
        staged = self._path / _STAGING / uuid.uuid4().hex
        root = self._path / _ARRAYS
        try:
            # all arrays (and the groups above them) are written and flushed to disk together (one syncfs where
            # available), then each array is moved into place atomically
            write_arrays(staged, {f"a{i}": value for i, value in enumerate(arrays.values())})
            groups = {
                "/".join(parts[:depth])
                for parts in (key_path(key).split("/") for key in arrays)
                for depth in range(1, len(parts))
            }
            create_groups(LocalStore(root), sorted(g for g in groups if not (root / g / "zarr.json").exists()))
            if not sync_filesystem(root):
                fsync_each(staged)
                for group in groups:
                    fsync_path(root / group / "zarr.json")
            for i, key in enumerate(arrays):
                target = root / key_path(key)
                if target.exists():
                    trash = self._path / _STAGING / f"old-{uuid.uuid4().hex}"
                    os.replace(target, trash)
                    shutil.rmtree(trash)
                os.replace(staged / f"a{i}", target)
            parent_dirs = {str((root / key_path(key)).parent) for key in arrays}
            if len(parent_dirs) <= 2 or not sync_filesystem(self._path):
                for parent in parent_dirs:
                    fsync_path(Path(parent))
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _ensure_parents(self, path: str, known: set[str] | None = None) -> Path:
        """Create the zarr groups above ``path`` in ``index.zarr``; return the array's directory.

        ``known`` collects the groups already created (or seen) by the caller, which are not opened again.
        """
        store = LocalStore(self._path / _ARRAYS)
        parts = path.split("/")
        for depth in range(1, len(parts)):
            group = "/".join(parts[:depth])
            if known is not None and group in known:
                continue
            zarr.open_group(store=store, path=group, mode="a")
            if known is not None:
                known.add(group)
        return self._path / _ARRAYS / path

    def mark_complete(self, result: Mapping[str, Any] | None = None) -> None:
        """Mark the index complete (atomically), storing ``result`` (JSON-serialisable; see :attr:`result`)."""
        self._require_writable()
        document = {**self._manifest, _STATUS: _COMPLETE, **({_RESULT: dict(result)} if result else {})}
        write_file_atomic(self._path / _MANIFEST, to_json(document, "manifest"))

    def open_rows(self, key: str, shape: tuple[int, ...], dtype: np.typing.DTypeLike = np.float16) -> zarr.Array:
        """A large ``(samples, concepts)`` array in the index, filled in row blocks: ``rows[start:stop] = block``.

        Chunked by rows. If the array exists with the same shape and dtype (resuming), it is opened as it is.

        Raises
        ------
        ValueError
            The array exists with another shape or dtype.
        """
        self._require_writable()
        shape = tuple(int(n) for n in shape)
        if not shape:
            raise ValueError("open_rows needs a shape with at least one dimension, e.g. (samples, concepts)")
        dtype = np.dtype(dtype)
        path = key_path(key)
        target = self._ensure_parents(path)
        store = LocalStore(self._path / _ARRAYS)
        if target.exists():
            array = zarr.open_array(store=store, path=path, mode="r+")
            if tuple(array.shape) != tuple(shape) or np.dtype(array.dtype) != dtype:
                raise ValueError(
                    f"the index already holds {key!r} with shape {tuple(array.shape)} and dtype {array.dtype}, "
                    f"expected {tuple(shape)} and {dtype}; use another key or another index directory"
                )
            return array
        row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
        rows = max(1, min(int(shape[0]), _ROW_CHUNK_BYTES // row_bytes))
        return zarr.create_array(store=store, name=path, shape=shape, dtype=dtype, chunks=(rows, *shape[1:]))

    def rows(self, key: str) -> zarr.Array:
        """The array ``key`` opened lazily (read-only): index it to read just those rows."""
        target = self._path / _ARRAYS / key_path(key)
        if not (target / "zarr.json").exists():
            raise self._missing(key)
        return zarr.open_array(store=LocalStore(self._path / _ARRAYS, read_only=True), path=key_path(key), mode="r")

    # ---------------------------------------------------------------------------------------------------- reading

    def keys(self) -> list[str]:
        """The keys of the final arrays, sorted."""
        return array_keys(self._path / _ARRAYS)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def read(self, key: str) -> np.ndarray:
        """The final array ``key``, read into memory."""
        target = self._path / _ARRAYS / key_path(key)
        if not (target / "zarr.json").exists():
            raise self._missing(key)
        return read_array(target)

    def _missing(self, key: str) -> IndexKeyError:
        known = self.keys()
        shown = ", ".join(repr(k) for k in known[:20]) + (", ..." if len(known) > 20 else "")
        return IndexKeyError(
            f"the index at {self._path} holds no array {key!r}; it holds {shown or 'no arrays yet'}"
            + ("" if self.complete else " (the index is still in progress)")
        )

    def __repr__(self) -> str:
        mode = "writable" if self._writable else "read-only"
        return f"IndexStore({str(self._path)!r}, {mode})"
