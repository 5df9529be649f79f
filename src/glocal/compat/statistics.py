"""zennit-crp's ``crp.statistics``: where class statistics live, :func:`load_statistics` and :func:`load_stat_targets`.

zennit-crp's ``Statistics`` kept, per class, the top-40 samples of each concept during its scan and wrote them to
``<path>/<RelStats|ActStats>_<sum|max>_<normed|unnormed>/<layer>/<class>_{data,rel,rf}.npy``. glocal's index keeps
one per-class top-k, ranked by the relevance summed over space without normalisation (there are no activation
statistics), so every ``RelStats_*`` folder of a compat run reads that one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .maximization import compat_index, folder_name, parse_folder_name

__all__ = ["Statistics", "load_stat_targets", "load_statistics"]


class Statistics:
    """The RelStats (``mode="relevance"``) or ActStats folder ``PATH`` of one setting.

    Examples
    --------
    >>> Statistics("relevance", "sum", abs_norm=True, path="out").PATH.as_posix()
    'out/RelStats_sum_normed'
    """

    def __init__(
        self, mode: str = "relevance", max_target: str = "sum", abs_norm: bool = False, path: str | Path | None = None
    ) -> None:
        if mode not in ("relevance", "activation"):
            raise InputError(f"mode must be 'relevance' or 'activation', got {mode!r}")
        self.mode = mode
        self.max_target = max_target
        self.abs_norm = abs_norm
        self.SAMPLE_SIZE = 40
        self.sub_folder = Path(folder_name("RelStats" if mode == "relevance" else "ActStats", max_target, abs_norm))
        self.PATH = Path(path) / self.sub_folder if path else self.sub_folder


def _relevance_folder(folder: Path) -> None:
    mode, _, _ = parse_folder_name(folder.name, ("RelStats", "ActStats"))
    if mode != "relevance":
        raise InputError(
            f"glocal keeps class statistics of relevance only, and {folder} holds no zennit-crp files; read the "
            "RelStats folder instead"
        )


def load_stat_targets(path_folder: str | Path) -> np.ndarray:
    """The classes with statistics (int64; zennit-crp's own version fails on NumPy >= 1.24)."""
    folder = Path(path_folder)
    if (folder / "targets.npy").exists():
        return np.load(folder / "targets.npy").astype(float).astype(np.int64)
    _relevance_folder(folder)
    index = compat_index(folder)
    stats = index.statistics(index.layers[0])
    assert stats.class_count is not None
    return np.flatnonzero(stats.class_count.numpy() > 0).astype(np.int64)


def load_statistics(path_folder: str | Path, layer_name: str, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """zennit-crp's ``load_statistics``: sample ids, scores and positions ``(n, concepts)`` of class ``target``.

    Reads zennit-crp's ``<layer>/<target>_{data,rel,rf}.npy`` in ``path_folder``; when they are missing and
    ``path_folder`` is a ``RelStats_*`` folder of a compat run, reads the class top-k of ``<path>/index``. Places
    without a sample hold id ``-1`` and score ``-inf``.
    """
    folder = Path(path_folder)
    files = [folder / layer_name / f"{target}_{part}.npy" for part in ("data", "rel", "rf")]
    if all(file.exists() for file in files):
        ids, scores, positions = (np.load(file, mmap_mode="r") for file in files)
        return ids, scores, positions
    _relevance_folder(folder)
    stats = compat_index(folder).statistics(layer_name)
    if not 0 <= int(target) < stats.classes:
        raise InputError(f"target {target} is not a class of the index (0..{stats.classes - 1})")
    columns = [stats.class_entries(int(target), concept) for concept in range(stats.concepts)]
    rows = max((len(ids) for ids, _, _ in columns), default=0)
    ids = np.full((rows, stats.concepts), -1, dtype=np.int64)
    scores = np.full((rows, stats.concepts), -np.inf, dtype=np.float32)
    positions = np.full((rows, stats.concepts), -1, dtype=np.int64)
    for concept, (column_ids, column_scores, column_positions) in enumerate(columns):
        ids[: len(column_ids), concept] = column_ids.numpy()
        scores[: len(column_ids), concept] = column_scores.numpy()
        positions[: len(column_ids), concept] = column_positions.numpy()
    return ids, scores, positions
