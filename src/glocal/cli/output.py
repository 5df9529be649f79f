"""Outputs written atomically: every file of a command goes to a hidden staging folder beside its destination and is
renamed into place only when the whole command succeeded, so a failed or interrupted run leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["Staging"]


class Staging:
    """A context manager that hands out temporary paths (:meth:`path`) and, on success, renames them to their
    destinations; on an error it removes them all.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "result"
    >>> with Staging() as staging:
    ...     _ = staging.path(out / "a.txt").write_text("done")
    >>> (out / "a.txt").read_text()
    'done'
    """

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path]] = []
        self._folders: dict[Path, Path] = {}

    def path(self, destination: str | os.PathLike[str]) -> Path:
        """A temporary path to write ``destination``'s content to (same suffix, same file system)."""
        destination = Path(destination).absolute()
        parent = destination.parent
        anchor = parent
        while not anchor.exists():  # the staging folder lives in the nearest existing folder: renames stay atomic
            anchor = anchor.parent
        if anchor not in self._folders:
            self._folders[anchor] = Path(tempfile.mkdtemp(prefix=".glocal-", dir=anchor))
        temporary = self._folders[anchor] / f"{len(self._moves)}{destination.suffix}"
        self._moves.append((temporary, destination))
        return temporary

    def commit(self) -> list[Path]:
        """Rename every staged file to its destination (creating folders); returns the destinations."""
        for temporary, destination in self._moves:
            if not temporary.exists():
                raise FileNotFoundError(f"{destination} was staged but never written")
        for temporary, destination in self._moves:
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, destination)
        return [destination for _, destination in self._moves]

    def discard(self) -> None:
        """Remove the staging folders and everything in them."""
        for folder in self._folders.values():
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self.commit()
        finally:
            self.discard()
