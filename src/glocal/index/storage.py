"""The index directory: the only code in glocal that touches disk.

An index directory holds::

    <dir>/manifest.json                what produced the index, plus "status": "in-progress" | "complete"
    <dir>/index.zarr/                  the final arrays, as "<group>/<name>" (zarr v3)
    <dir>/checkpoints/ckpt-<step>/     arrays.zarr/ and progress.json of the last checkpoint
    <dir>/checkpoints/LATEST           the name of the last complete checkpoint directory

Every change a reader could observe is made atomically: files and directories are written under a temporary name,
flushed to disk and then moved into place with :func:`os.replace`. A crash (even ``SIGKILL``, or the machine losing
power) at any moment therefore leaves either the old or the new state readable, and a reader in another process sees
the last complete checkpoint and only fully written final arrays.

What a rename needs is that the renamed data is on disk before the rename is (otherwise a power loss can leave a
complete-looking name over empty files); a process crash alone loses nothing that was written. A zarr tree is many
small files, and one ``fsync`` per file costs a journal commit each (seconds for an index of many layers), so a tree
is flushed with one ``syncfs`` of its file system where the platform has it (Linux), and file by file elsewhere;
renames are then made durable by flushing their directories (or one more ``syncfs``).

Array keys are ``/``-separated paths; each part may contain any character (layer names such as ``features.28``).
On disk, characters other than ``A-Z a-z 0-9 _ -`` are escaped as ``~XX`` (hex of their UTF-8 bytes).

A reference cache directory (:class:`ReferenceCache`) holds one entry per key (a sha256 of the settings)::

    <dir>/<key>/entry.json             the images' file names and sha256, and what the caller stored with them
    <dir>/<key>/<i>.png                the rendered reference images
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from PIL import Image
from zarr.storage import LocalStore

from ..errors import GlocalError

__all__ = [
    "IndexCorruptedError",
    "IndexKeyError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "IndexReadOnlyError",
    "IndexStore",
    "ReferenceCache",
    "mismatch_error",
    "summarise_differences",
]

logger = logging.getLogger(__name__)

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
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ROW_CHUNK_BYTES = 4 * 2**20


class IndexMismatchError(GlocalError, ValueError):
    """An index directory exists, but was produced by something other than what is given now.

    Attributes
    ----------
    differences
        Every difference, one line each (the message shows a summary).
    """

    def __init__(self, message: str, differences: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.differences = list(differences)


class IndexNotFoundError(GlocalError, FileNotFoundError):
    """A directory that holds no glocal index (missing, empty, something else, or a zennit-crp output folder)."""


_SHOWN_DIFFERENCES = 3


def summarise_differences(lines: Sequence[str], shown: int = _SHOWN_DIFFERENCES) -> str:
    """A few lines for many ``"<dotted key>: ..."`` differences: how many of each kind, and the first ``shown``.

    The kind is the key's first part, or its first two when it has more (``composite.rules`` for the rules of each
    module).

    Examples
    --------
    >>> print(summarise_differences([f"composite.rules.conv{i}.rule: index has A, given has B" for i in range(40)]
    ...                             + ["k: index has 40, given has 8"], shown=2))
    41 differences: composite.rules (40), k (1); the first 2:
      composite.rules.conv0.rule: index has A, given has B
      composite.rules.conv1.rule: index has A, given has B
    """
    kinds: dict[str, int] = {}
    for line in lines:
        parts = line.split(":", 1)[0].split(".")
        kind = ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    counts = ", ".join(f"{kind} ({count})" for kind, count in kinds.items())
    head = f"{len(lines)} difference{'s' if len(lines) != 1 else ''}: {counts}"
    if len(lines) <= shown:
        return head + ":\n  " + "\n  ".join(lines)
    return head + f"; the first {shown}:\n  " + "\n  ".join(lines[:shown])


def mismatch_error(what: str, lines: Sequence[str], advice: str) -> IndexMismatchError:
    """An :class:`IndexMismatchError` whose message summarises ``lines`` (all of them logged at DEBUG level)."""
    logger.debug("%s; all %d differences:\n  %s", what, len(lines), "\n  ".join(lines))
    more = (
        f"\nAll {len(lines)} are listed in this error's `differences` attribute (and the debug log)."
        if len(lines) > _SHOWN_DIFFERENCES
        else ""
    )
    return IndexMismatchError(f"{what}. {summarise_differences(lines)}{more}\n{advice}", lines)


class IndexCorruptedError(GlocalError, ValueError):
    """A file of an index directory cannot be read (truncated, not JSON, not a zarr array, ...)."""


class IndexKeyError(GlocalError, KeyError):
    """An array key that the index does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class IndexReadOnlyError(GlocalError, PermissionError):
    """A write to an index that was opened for reading only."""


# --------------------------------------------------------------------------------------------------------------------
# low-level helpers


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


def _key_path(key: str) -> str:
    """The relative on-disk path of the array ``key``."""
    if not isinstance(key, str):
        raise TypeError(f"array keys must be str such as 'features.28/relmax_sum/ids', got {type(key).__name__}")
    return "/".join(_escape(part) for part in key.split("/"))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Any:
    """libc's ``syncfs`` (Linux), or ``None`` where the platform lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()


def _sync_filesystem(path: Path) -> bool:
    """Flush every written file of the file system holding ``path`` (one call); ``False`` if that is unavailable."""
    if _syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return bool(_syncfs(fd) == 0)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory below ``root`` (and ``root`` itself) to disk.

    One ``syncfs`` of the file system where available; otherwise one ``fsync`` per file and directory.
    """
    if not _sync_filesystem(root):
        _fsync_each(root)


def _fsync_each(root: Path) -> None:
    """``fsync`` every file and directory below ``root`` (and ``root`` itself), one by one."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(directory) / name)
        _fsync_path(Path(directory))


def _write_file_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text``; a crash leaves either the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_path(path.parent)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexCorruptedError(
            f"{path} is not valid JSON ({error}); the file is corrupted. It was left untouched: delete the index "
            "directory to build it again, or restore the file from a backup."
        ) from error


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"the {what} must be JSON-serialisable (dicts with str keys, lists, str, int, finite float, bool, None); "
            f"{error}. Convert such values to str or lists first."
        ) from error


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


def _write_arrays(root: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as a new zarr hierarchy at ``root`` (which must not exist)."""
    store = LocalStore(root)
    zarr.open_group(store=store, mode="w-")
    groups: set[str] = set()
    items = []
    for key, value in arrays.items():
        path = _key_path(key)
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


def _create_groups(store: LocalStore, paths: Sequence[str]) -> None:
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


def _read_array(path: Path) -> np.ndarray:
    try:
        return np.asarray(zarr.open_array(store=LocalStore(path, read_only=True), mode="r")[...])
    except FileNotFoundError:
        raise
    except Exception as error:
        raise IndexCorruptedError(
            f"the array at {path} cannot be read ({type(error).__name__}: {error}); it is corrupted. It was left "
            "untouched: delete the index directory to build it again."
        ) from error


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise IndexCorruptedError(
            f"the checkpoint file {path} cannot be read ({error}); delete the checkpoint"
        ) from error


def _array_keys(root: Path) -> list[str]:
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


# --------------------------------------------------------------------------------------------------------------------


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
        given = json.loads(_to_json(given, "manifest"))  # compare as stored (tuples become lists)
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
            _write_file_atomic(manifest_path, _to_json({**given, _STATUS: _IN_PROGRESS}, "manifest"))
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
        stored = _read_json(path)
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
        progress_text = _to_json(dict(progress), "progress")
        checkpoints = self._path / _CHECKPOINTS
        name = f"ckpt-{int(step)}"
        tmp = checkpoints / f".{name}.tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            with open(tmp / _CHECKPOINT_ARRAYS, "wb") as handle:
                state: dict[str, Any] = {key: np.asarray(value) for key, value in arrays.items()}
                np.savez(handle, **state)
            (tmp / _PROGRESS).write_text(progress_text, encoding="utf-8")
            _fsync_tree(tmp)
            if (checkpoints / name).exists():  # left by a crash before LATEST named it: never readable, safe to drop
                shutil.rmtree(checkpoints / name)
            os.replace(tmp, checkpoints / name)
            _fsync_path(checkpoints)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _write_file_atomic(checkpoints / _LATEST, name)
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
                progress = _read_json(directory / _PROGRESS)
                arrays = _read_npz(directory / _CHECKPOINT_ARRAYS)
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
            _write_arrays(staged, {f"a{i}": value for i, value in enumerate(arrays.values())})
            groups = {
                "/".join(parts[:depth])
                for parts in (_key_path(key).split("/") for key in arrays)
                for depth in range(1, len(parts))
            }
            _create_groups(LocalStore(root), sorted(g for g in groups if not (root / g / "zarr.json").exists()))
            if not _sync_filesystem(root):
                _fsync_each(staged)
                for group in groups:
                    _fsync_path(root / group / "zarr.json")
            for i, key in enumerate(arrays):
                target = root / _key_path(key)
                if target.exists():
                    trash = self._path / _STAGING / f"old-{uuid.uuid4().hex}"
                    os.replace(target, trash)
                    shutil.rmtree(trash)
                os.replace(staged / f"a{i}", target)
            parent_dirs = {str((root / _key_path(key)).parent) for key in arrays}
            if len(parent_dirs) <= 2 or not _sync_filesystem(self._path):
                for parent in parent_dirs:
                    _fsync_path(Path(parent))
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
        _write_file_atomic(self._path / _MANIFEST, _to_json(document, "manifest"))

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
        path = _key_path(key)
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
        target = self._path / _ARRAYS / _key_path(key)
        if not (target / "zarr.json").exists():
            raise self._missing(key)
        return zarr.open_array(store=LocalStore(self._path / _ARRAYS, read_only=True), path=_key_path(key), mode="r")

    # ---------------------------------------------------------------------------------------------------- reading

    def keys(self) -> list[str]:
        """The keys of the final arrays, sorted."""
        return _array_keys(self._path / _ARRAYS)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def read(self, key: str) -> np.ndarray:
        """The final array ``key``, read into memory."""
        target = self._path / _ARRAYS / _key_path(key)
        if not (target / "zarr.json").exists():
            raise self._missing(key)
        return _read_array(target)

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


# --------------------------------------------------------------------------------------------------------------------


_ENTRY = "entry.json"
_ENTRY_FORMAT = 1


class ReferenceCache:
    """A directory of rendered reference images, one entry per key.

    The key is a sha256 over everything that changes the images (see :meth:`key`); an entry holds the PNG images and
    a small JSON document. Entries are written atomically (staged under a temporary name, then moved into place with
    :func:`os.replace`), and an entry that cannot be read back exactly (a missing or truncated file, a changed byte)
    counts as absent, so the next :meth:`put` rewrites it.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> cache = ReferenceCache(tempfile.mkdtemp())
    >>> key = ReferenceCache.key({"layer": "features.28", "concept": 3})
    >>> cache.get(key) is None
    True
    >>> cache.put(key, [Image.new("RGB", (4, 4), (255, 0, 0))], {"sample_ids": [7]})
    >>> [image.size for image in cache.get(key)], cache.meta(key)
    ([(4, 4)], {'sample_ids': [7]})
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        if self._path.exists() and not self._path.is_dir():
            raise NotADirectoryError(f"the reference cache {self._path} is a file; give a directory")
        self._path.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        """The cache directory."""
        return self._path

    @staticmethod
    def key(settings: Mapping[str, Any]) -> str:
        """The sha256 (hex) of ``settings``, a JSON-serialisable mapping, independent of key order."""
        text = json.dumps(json.loads(_to_json(dict(settings), "reference settings")), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _entry_dir(self, key: str) -> Path:
        if not (isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
            raise ValueError(f"a reference cache key is a sha256 in hex (64 characters 0-9a-f), got {key!r}")
        return self._path / key

    def entry(self, key: str) -> tuple[list[Image.Image], dict[str, Any]] | None:
        """The images and stored metadata of ``key``, or ``None`` if the entry is absent or corrupted."""
        directory = self._entry_dir(key)
        if not directory.is_dir():
            return None
        try:
            document = json.loads((directory / _ENTRY).read_text(encoding="utf-8"))
            if not isinstance(document, dict) or document.get("format") != _ENTRY_FORMAT:
                raise ValueError(f"{_ENTRY} is not a reference cache entry of format {_ENTRY_FORMAT}")
            images = []
            for item in document["images"]:
                name = str(item["file"])
                if "/" in name or name.startswith("."):
                    raise ValueError(f"image file name {name!r} points outside the entry")
                data = (directory / name).read_bytes()
                if hashlib.sha256(data).hexdigest() != item["sha256"]:
                    raise ValueError(f"{name} does not match its sha256")
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
                    images.append(image.copy())
            meta = document["meta"]
            if not isinstance(meta, dict):
                raise ValueError("the stored metadata is not a JSON object")
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring corrupted reference cache entry %s (%s); it will be rewritten", directory, error)
            return None
        return images, meta

    def get(self, key: str) -> list[Image.Image] | None:
        """The images of ``key``, or ``None`` if the entry is absent or corrupted."""
        found = self.entry(key)
        return None if found is None else found[0]

    def meta(self, key: str) -> dict[str, Any] | None:
        """The metadata stored with ``key``, or ``None`` if the entry is absent or corrupted."""
        found = self.entry(key)
        return None if found is None else found[1]

    def put(self, key: str, images: Sequence[Image.Image], meta: Mapping[str, Any]) -> None:
        """Store ``images`` (as PNG) and ``meta`` (JSON-serialisable) under ``key``, replacing any entry there."""
        target = self._entry_dir(key)
        meta_text = _to_json(dict(meta), "reference metadata")
        tmp = self._path / f".{key}.tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            listed = []
            for number, image in enumerate(images):
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                data = buffer.getvalue()
                name = f"{number}.png"
                (tmp / name).write_bytes(data)
                listed.append({"file": name, "sha256": hashlib.sha256(data).hexdigest()})
            document = {"format": _ENTRY_FORMAT, "images": listed, "meta": json.loads(meta_text)}
            (tmp / _ENTRY).write_text(_to_json(document, "reference cache entry"), encoding="utf-8")
            _fsync_tree(tmp)
            if target.exists():  # an old or corrupted entry: move it aside first (a directory cannot replace another)
                trash = self._path / f".{key}.old-{uuid.uuid4().hex}"
                try:
                    os.replace(target, trash)
                except FileNotFoundError:  # another process removed it meanwhile
                    pass
                else:
                    shutil.rmtree(trash, ignore_errors=True)
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.is_dir():  # not a concurrent writer of the same entry: a real failure
                    raise
            _fsync_path(self._path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"ReferenceCache({str(self._path)!r})"
