"""Progress bars for loops that can take more than a few seconds (attribution graphs, paths, atlases).

A bar appears only when the loop is still running after :data:`DELAY` seconds, so quick calls print nothing;
``enabled=False`` (each function's ``progress=False``) turns it off. Bars go to stderr through ``tqdm.auto`` (a
widget in notebooks) and vanish when the loop ends.

>>> with progress_bar(3, "demo", enabled=False) as bar:
...     for _ in range(3):
...         bar.update(1)
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["DELAY", "progress_bar"]

DELAY = 2.0
"""Seconds a loop runs before its bar appears."""


class _Silent:
    """Stands in for a bar when progress is off: every call does nothing."""

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        pass


def progress_bar(total: int | None, description: str, *, enabled: bool = True, unit: str = "it") -> Any:
    """A ``tqdm`` bar over ``total`` steps (a context manager), or a silent stand-in when disabled.

    Parameters
    ----------
    total
        Number of steps, or ``None`` when unknown.
    description
        Shown left of the bar, e.g. ``"attribution graph"``.
    enabled
        ``False``: no bar at all.
    unit
        What one step is (``"level"``, ``"batch"``, ...).
    """
    if not enabled:
        return _Silent()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but a progress bar is not worth failing over
        return _Silent()
    return tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True, delay=DELAY, leave=False)
