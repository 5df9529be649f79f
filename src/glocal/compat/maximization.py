"""zennit-crp's ``crp.maximization``: where RelMax and ActMax results live, and :func:`load_maximization`.

zennit-crp's ``Maximization`` collected the top-40 samples per concept during its scan and wrote them as ``.npy``
files to ``<path>/<RelMax|ActMax>_<sum|max>_<normed|unnormed>/``. Here the scan is glocal's index (see
:class:`~glocal.compat.FeatureVisualization`), so :class:`Maximization` only names the folder (``PATH``) and the
index mode it corresponds to, and :func:`load_maximization` reads either zennit-crp's files or, for a folder
``<path>/RelMax_...`` that does not exist, the compat index ``<path>/index`` in zennit-crp's array layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..index import MODES, ConceptIndex

__all__ = ["Maximization", "compat_index", "folder_name", "index_mode", "load_maximization", "parse_folder_name"]


def index_mode(mode: str, max_target: str = "sum", abs_norm: bool = True) -> str:
    """The glocal index mode of zennit-crp's settings: ``relmax_sum``, ``actmax_max_norm``, ...

    ``abs_norm`` divides each sample's channel scores by the sum of their absolute values (zennit-crp's
    normalisation), for relevance and for activation. ActMax maps to the index modes that rank zennit-crp's raw
    (unrectified) activation: ``actmax_<sum|max>_norm`` and ``actmax_<sum|max>_raw``.

    Examples
    --------
    >>> index_mode("relevance", "max", abs_norm=True)
    'relmax_max_norm'
    >>> index_mode("activation", "sum", abs_norm=False)
    'actmax_sum_raw'
    """
    if mode not in ("relevance", "activation"):
        raise InputError(f"mode must be 'relevance' or 'activation', got {mode!r}")
    if max_target not in ("sum", "max"):
        raise InputError(f"max_target must be 'sum' or 'max', got {max_target!r}")
    if mode == "relevance":
        return f"relmax_{max_target}" + ("_norm" if abs_norm else "")
    # zennit-crp ranks the raw (unrectified) activation; glocal's own actmax_<sum|max> rank the positive part
    exact = f"actmax_{max_target}_{'norm' if abs_norm else 'raw'}"
    return exact if exact in MODES else f"actmax_{max_target}"


def folder_name(kind: str, max_target: str, abs_norm: bool) -> str:
    """zennit-crp's name of a result folder: ``kind`` (``RelMax``, ``ActStats``, ...) and the settings.

    Examples
    --------
    >>> folder_name("RelStats", "max", abs_norm=True)
    'RelStats_max_normed'
    """
    return f"{kind}_{max_target}_{'normed' if abs_norm else 'unnormed'}"


class Maximization:
    """The RelMax (``mode="relevance"``) or ActMax results of one setting: folder ``PATH`` and :attr:`index_mode`.

    Examples
    --------
    >>> m = Maximization("activation", "sum", abs_norm=False, path="out")
    >>> m.PATH.as_posix(), m.index_mode
    ('out/ActMax_sum_unnormed', 'actmax_sum_raw')
    """

    def __init__(
        self, mode: str = "relevance", max_target: str = "sum", abs_norm: bool = False, path: str | Path | None = None
    ) -> None:
        self.mode = mode
        self.index_mode = index_mode(mode, max_target, abs_norm)
        self.max_target = max_target
        self.abs_norm = abs_norm
        self.SAMPLE_SIZE = 40
        self.sub_folder = Path(folder_name("RelMax" if mode == "relevance" else "ActMax", max_target, abs_norm))
        self.PATH = Path(path) / self.sub_folder if path else self.sub_folder


def parse_folder_name(name: str, kinds: tuple[str, str]) -> tuple[str, str, bool]:
    """``RelMax_sum_normed`` -> ``("relevance", "sum", True)``."""
    parts = name.split("_")
    if (
        len(parts) != 3
        or parts[0] not in kinds
        or parts[1] not in ("sum", "max")
        or parts[2]
        not in (
            "normed",
            "unnormed",
        )
    ):
        raise InputError(
            f"{name!r} is not a zennit-crp result folder name ({kinds[0]}|{kinds[1]}_<sum|max>_<normed|unnormed>)"
        )
    return ("relevance" if parts[0] == kinds[0] else "activation"), parts[1], parts[2] == "normed"


def compat_index(path_folder: Path) -> ConceptIndex:
    """The compat index ``<path>/index`` that stands in for zennit-crp's result folder ``<path>/<folder>``.

    Raises :class:`~glocal.errors.InputError` when there is none.
    """
    directory = path_folder.parent / "index"
    if not (directory / "manifest.json").exists():
        raise InputError(
            f"{path_folder} holds no zennit-crp files, and {directory} holds no glocal.compat index; give the folder "
            "of a zennit-crp FeatureVisualization result, or run glocal.compat.FeatureVisualization with "
            f"path={str(path_folder.parent)!r} first"
        )
    return ConceptIndex.open(directory)


def load_maximization(path_folder: str | Path, layer_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """zennit-crp's ``load_maximization``: sample ids, scores and neuron positions, each ``(n, concepts)``, best first.

    Reads zennit-crp's ``<layer>_data.npy``, ``_rel.npy``, ``_rf.npy`` in ``path_folder``; when they are missing and
    ``path_folder`` is the ``PATH`` of a :class:`Maximization` (``<path>/RelMax_sum_normed``, ...), reads the
    corresponding mode of the compat index ``<path>/index``. Places without a sample (fewer samples than rows) hold
    id ``-1`` and score ``-inf``.
    """
    folder = Path(path_folder)
    files = [folder / f"{layer_name}_{part}.npy" for part in ("data", "rel", "rf")]
    if all(file.exists() for file in files):
        ids, scores, positions = (np.load(file, mmap_mode="r") for file in files)
        return ids, scores, positions
    mode, max_target, abs_norm = parse_folder_name(folder.name, ("RelMax", "ActMax"))
    index = compat_index(folder)
    name = index_mode(mode, max_target, abs_norm)
    top = index.top(layer_name, name)
    ids, scores, positions = (t.numpy().T for t in (top.ids, top.scores, top.positions))
    rows = int((ids >= 0).any(1).sum())
    return ids[:rows].copy(), scores[:rows].copy(), positions[:rows].copy()
