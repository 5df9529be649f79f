"""Reading the output folder of zennit-crp's ``FeatureVisualization.run`` into a glocal index.

zennit-crp wrote its results as ``.npy`` files in folders named after the settings (``RelMax_sum_normed``,
``ActMax_max_unnormed``, ``RelStats_sum_unnormed``, ...); :func:`import_zennit_crp` converts them into glocal's index
layout once, so :class:`~glocal.compat.FeatureVisualization` (and glocal itself) can read them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import InputError
from ..index import MODES, ConceptIndex, LayerStatistics
from ..index.storage import IndexStore
from .maximization import index_mode

__all__ = ["IMPORTED", "RESULT_FOLDER", "import_zennit_crp"]

RESULT_FOLDER = re.compile(r"^(RelMax|ActMax|RelStats|ActStats)_(sum|max)_(normed|unnormed)$")
"""The name of a zennit-crp result folder; its groups are the kind, ``max_target`` and the normalisation."""
IMPORTED = "index_zennit_crp"
"""Folder (inside a zennit-crp result folder) of the glocal index that ``FeatureVisualization`` imports it into."""
_CHECKPOINT_FILE = re.compile(r"_[0-9]+_[0-9]+$")


def _max_mode(kind: str, target: str, norm: str) -> str:
    return index_mode("relevance" if kind == "RelMax" else "activation", target, norm == "normed")


def _pad(array: np.ndarray, k: int, fill: float | int, dtype: Any) -> np.ndarray:
    """zennit-crp's ``(n, concepts)`` to glocal's ``(concepts, k)``, padded with ``fill``."""
    out = np.full((array.shape[1], k), fill, dtype=dtype)
    out[:, : array.shape[0]] = array.T[:, :k]
    return out


def import_zennit_crp(
    folder: str | Path, directory: str | Path, *, manifest_extra: dict[str, Any] | None = None
) -> ConceptIndex:
    """Read the output folder of zennit-crp's ``FeatureVisualization.run`` into a glocal index at ``directory``.

    ``RelMax_<sum|max>_<normed|unnormed>`` become ``relmax_<sum|max>[_norm]``; ``ActMax_<sum|max>_*`` become
    ``actmax_<sum|max>`` (unnormed preferred; the folder used is in the manifest); modes zennit-crp did not compute
    stay empty (ids ``-1``). ``RelStats_*`` (unnormed ``sum`` preferred) becomes the class top-k; the class relevance
    sums and counts then cover only the kept samples. ``manifest_extra`` is added to the manifest.
    """
    source = Path(folder)
    found: dict[str, dict[str, Path]] = {"max": {}, "stats": {}}
    preference: dict[str, int] = {}
    for sub in sorted(p for p in source.iterdir() if p.is_dir()) if source.is_dir() else []:
        match = RESULT_FOLDER.match(sub.name)
        if match is None:
            continue
        kind, target, norm = match.groups()
        if kind in ("RelMax", "ActMax"):
            mode = _max_mode(kind, target, norm)
            rank = 0 if (kind == "RelMax" or norm == "unnormed") else 1
            if mode not in found["max"] or rank < preference[mode]:
                found["max"][mode], preference[mode] = sub, rank
        elif kind == "RelStats":
            rank = (target != "sum") * 2 + (norm != "unnormed")
            if "classes" not in found["stats"] or rank < preference["classes"]:
                found["stats"]["classes"], preference["classes"] = sub, rank
    if not found["max"]:
        raise InputError(f"{source} holds no zennit-crp RelMax_*/ActMax_* folders; give FeatureVisualization's path")
    layers: list[str] = []
    for sub in found["max"].values():
        for file in sorted(sub.glob("*_data.npy")):
            name = file.name[: -len("_data.npy")]
            if not _CHECKPOINT_FILE.search(name) and name not in layers:
                layers.append(name)
    loaded: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for mode, sub in found["max"].items():
        for layer in layers:
            if (sub / f"{layer}_data.npy").exists():
                loaded[mode, layer] = tuple(np.load(sub / f"{layer}_{part}.npy") for part in ("data", "rel", "rf"))
    stats_dir = found["stats"].get("classes")
    class_files: dict[str, dict[int, tuple[np.ndarray, ...]]] = {layer: {} for layer in layers}
    if stats_dir is not None:
        for layer in layers:
            for file in sorted((stats_dir / layer).glob("*_data.npy")) if (stats_dir / layer).is_dir() else []:
                name = file.name[: -len("_data.npy")]
                if _CHECKPOINT_FILE.search(name):
                    continue
                label = int(float(name))
                class_files[layer][label] = tuple(
                    np.load(stats_dir / layer / f"{name}_{part}.npy") for part in ("data", "rel", "rf")
                )
    sizes = [a[0].shape[0] for a in loaded.values()] + [a[0].shape[0] for c in class_files.values() for a in c.values()]
    k = max(sizes)
    arrays: dict[str, np.ndarray] = {}
    for layer in layers:
        concepts = next(a[0].shape[1] for (_, name), a in loaded.items() if name == layer)
        for mode in MODES:
            if (mode, layer) in loaded:
                ids, scores, positions = loaded[mode, layer]
                arrays[f"{layer}/{mode}/ids"] = _pad(ids.astype(np.int64), k, -1, np.int64)
                arrays[f"{layer}/{mode}/scores"] = _pad(scores.astype(np.float32), k, -np.inf, np.float32)
                arrays[f"{layer}/{mode}/positions"] = _pad(positions.astype(np.int64), k, -1, np.int64)
            else:
                arrays[f"{layer}/{mode}/ids"] = np.full((concepts, k), -1, dtype=np.int64)
                arrays[f"{layer}/{mode}/scores"] = np.full((concepts, k), -np.inf, dtype=np.float32)
                arrays[f"{layer}/{mode}/positions"] = np.full((concepts, k), -1, dtype=np.int64)
        per_class = class_files[layer]
        classes = max(per_class, default=-1) + 1
        class_ids = np.full((classes * concepts, k), -1, dtype=np.int64)
        class_scores = np.full((classes * concepts, k), -np.inf, dtype=np.float32)
        class_positions = np.full((classes * concepts, k), -1, dtype=np.int64)
        relevance_sum = np.zeros((classes, concepts), dtype=np.float64)
        count = np.zeros(classes, dtype=np.int64)
        for label, (ids, scores, positions) in per_class.items():
            rows = slice(label * concepts, (label + 1) * concepts)
            class_ids[rows] = _pad(ids.astype(np.int64), k, -1, np.int64)
            class_scores[rows] = _pad(scores.astype(np.float32), k, -np.inf, np.float32)
            class_positions[rows] = _pad(positions.astype(np.int64), k, -1, np.int64)
            relevance_sum[label] = scores.astype(np.float64).sum(0)
            count[label] = scores.shape[0]
        arrays[f"{layer}/classes/ids"] = class_ids
        arrays[f"{layer}/classes/scores"] = class_scores
        arrays[f"{layer}/classes/positions"] = class_positions
        arrays[f"{layer}/classes/relevance_sum"] = relevance_sum
        arrays[f"{layer}/classes/count"] = count
    manifest = {
        "glocal": __version__,
        "imported_from": "zennit-crp",
        "source": str(source.resolve()),
        "layers": layers,
        "k": k,
        "modes": {mode: sub.name for mode, sub in sorted(found["max"].items())},
        "classes": None if stats_dir is None else stats_dir.name,
        **(manifest_extra or {}),
    }
    compact: dict[str, np.ndarray] = {}
    for layer in layers:  # glocal's own layout, through the same conversion the scan uses
        prefix = f"{layer}/"
        layer_arrays = {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
        for key, value in LayerStatistics.from_arrays(layer_arrays).arrays().items():
            compact[prefix + key] = value
    store = IndexStore.create(directory, manifest)
    store.write_results(compact)
    store.mark_complete()
    return ConceptIndex.open(directory)
