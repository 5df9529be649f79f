"""The storage errors: an index that is missing, corrupted, made from other inputs, read-only, or lacks a key.

:func:`mismatch_error` builds an :class:`IndexMismatchError` whose message summarises many differences
(:func:`summarise_differences`) and whose ``differences`` attribute lists them all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ...errors import GlocalError

__all__ = [
    "IndexCorruptedError",
    "IndexKeyError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "IndexReadOnlyError",
    "mismatch_error",
    "summarise_differences",
]

logger = logging.getLogger(__name__)


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
