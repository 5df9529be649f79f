"""The storage layer: the only code in glocal that touches disk.

It keeps two kinds of directory: the index directory (:class:`IndexStore`: manifest, final arrays, checkpoints) and
the reference cache (:class:`ReferenceCache`: rendered reference images). Every change a reader could observe is
made atomically, so a crash at any moment leaves either the old or the new state readable.

The ideas live in submodules, lower ones first: :mod:`.errors` (the storage errors), :mod:`.files` (atomic writes and
flushing to disk), :mod:`.arrays` (array keys and zarr/npz arrays), :mod:`.store` (:class:`IndexStore`) and
:mod:`.reference_cache` (:class:`ReferenceCache`).
"""

from .errors import (
    IndexCorruptedError,
    IndexKeyError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexReadOnlyError,
    mismatch_error,
    summarise_differences,
)
from .reference_cache import ReferenceCache
from .store import IndexStore

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
