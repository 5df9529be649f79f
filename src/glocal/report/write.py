"""Writing a report: :func:`write_report`, one self-contained HTML file, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from .data import ModelReport
from .view import render_page

__all__ = ["write_report"]


def write_report(
    sections: ModelReport | Sequence[ModelReport], path: str | Path, *, title: str = "glocal report"
) -> Path:
    """Write ``sections`` as one HTML file that opens from disk (no server, no network) and return its path.

    The page is written under a temporary name in the same folder and renamed into place, so an interrupted write
    leaves the old file (or none), never half a page. The footer states the size budget and the file's own size.
    """
    if isinstance(sections, ModelReport):
        sections = [sections]
    sections = list(sections)
    if not sections or not all(isinstance(section, ModelReport) for section in sections):
        raise InputError(
            "write_report takes a ModelReport or a non-empty sequence of them (from glocal.report.build_report), got "
            f"{[type(section).__name__ for section in sections] or 'nothing'}"
        )
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder: give the report a file name, e.g. {path / 'report.html'}")
    size = None
    for _ in range(4):  # the footer states the file's size, which changes with the number of its digits
        text = render_page(sections, title, size=size).encode("utf-8")
        if size == len(text):
            break
        size = len(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # a page to share, as open() would make it (mkstemp's file is private)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
