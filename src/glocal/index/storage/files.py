"""Durable file operations: atomic replacement of files, and flushing files and directories to disk.

Every change a reader could observe is made atomically: files and directories are written under a temporary name,
flushed to disk and then moved into place with :func:`os.replace`. A crash (even ``SIGKILL``, or the machine losing
power) at any moment therefore leaves either the old or the new state readable.

What a rename needs is that the renamed data is on disk before the rename is (otherwise a power loss can leave a
complete-looking name over empty files); a process crash alone loses nothing that was written. A zarr tree is many
small files, and one ``fsync`` per file costs a journal commit each (seconds for an index of many layers), so a tree
is flushed with one ``syncfs`` of its file system where the platform has it (Linux), and file by file elsewhere;
renames are then made durable by flushing their directories (or one more ``syncfs``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from .errors import IndexCorruptedError

__all__ = [
    "fsync_each",
    "fsync_path",
    "fsync_tree",
    "read_json",
    "sync_filesystem",
    "to_json",
    "write_file_atomic",
]


def fsync_path(path: Path) -> None:
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


def sync_filesystem(path: Path) -> bool:
    """Flush every written file of the file system holding ``path`` (one call); ``False`` if that is unavailable."""
    if _syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return bool(_syncfs(fd) == 0)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory below ``root`` (and ``root`` itself) to disk.

    One ``syncfs`` of the file system where available; otherwise one ``fsync`` per file and directory.
    """
    if not sync_filesystem(root):
        fsync_each(root)


def fsync_each(root: Path) -> None:
    """``fsync`` every file and directory below ``root`` (and ``root`` itself), one by one."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory))


def write_file_atomic(path: Path, text: str) -> None:
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
    fsync_path(path.parent)


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexCorruptedError(
            f"{path} is not valid JSON ({error}); the file is corrupted. It was left untouched: delete the index "
            "directory to build it again, or restore the file from a backup."
        ) from error


def to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"the {what} must be JSON-serialisable (dicts with str keys, lists, str, int, finite float, bool, None); "
            f"{error}. Convert such values to str or lists first."
        ) from error
