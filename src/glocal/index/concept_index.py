"""Reading a concept index: :class:`ConceptIndex`, the RelMax/ActMax samples and class statistics of each concept.

An index is opened from the directory :func:`~glocal.index.build_index` wrote (:class:`~.storage.IndexStore`); an index
still being written shows the merged last checkpoints of its ranks. Given the model, composite or dataset,
:meth:`ConceptIndex.open` checks that they made the index: the dataset sample by sample against the batch digests the
scan kept (see :mod:`glocal.index.fingerprint`).

The arrays of an index are its layers' statistics under ``"<layer>/<name>"`` (:func:`statistics_arrays`), the
optional per-sample matrix under ``"<layer>/matrix"`` and the batch digests under :data:`DIGESTS_KEY`.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zennit.core

from ..data import as_data
from ..errors import ConceptError, InputError, LayerError, TargetError, warn
from .fingerprint import (
    batch_digests,
    composite_fingerprint,
    dataset_fingerprint,
    differences,
    digest_changes,
    model_fingerprint,
)
from .statistics import MODES, LayerStatistics
from .storage import IndexKeyError, IndexStore, mismatch_error
from .topk import TopK

__all__ = ["DIGESTS_KEY", "MATRIX_KEY", "ConceptIndex", "statistics_arrays", "statistics_from_arrays"]

logger = logging.getLogger(__name__)

MATRIX_KEY = "matrix"  # "<layer>/matrix": the (samples, concepts) float16 relevance matrix
# (batches, 32) uint8: each fixed batch's digest (a rank's share in checkpoints)
DIGESTS_KEY = "__dataset__/batch_digests"


def statistics_arrays(statistics: dict[str, LayerStatistics]) -> dict[str, np.ndarray]:
    """The layers' statistics as the index stores them: arrays by ``"<layer>/<name>"``."""
    return {f"{layer}/{key}": value for layer, stats in statistics.items() for key, value in stats.arrays().items()}


def statistics_from_arrays(arrays: dict[str, np.ndarray], layers: Sequence[str]) -> dict[str, LayerStatistics]:
    """The statistics of ``layers`` from their arrays (:func:`statistics_arrays`; the matrices are left out)."""
    out = {}
    for layer in layers:
        prefix = f"{layer}/"
        out[layer] = LayerStatistics.from_arrays(
            {
                key[len(prefix) :]: value
                for key, value in arrays.items()
                if key.startswith(prefix) and MATRIX_KEY not in key
            }
        )
    return out


def _check_dataset(store: IndexStore, dataset: Any, progress: bool) -> list[str]:
    """Every sample of ``dataset`` against the batch digests the index kept; lines naming those that differ."""
    batch_size = int(store.manifest["batch_size"])
    if store.complete:
        try:
            stored = store.read(DIGESTS_KEY)
        except IndexKeyError:
            logger.info(
                "the index at %s keeps no batch digests (made by an older glocal): quick check only", store.path
            )
            return []
        return _compare(dataset, batch_size, list(range(stored.shape[0])), stored, progress)
    lines = []
    ranks = store.path / "ranks"
    for share_dir in sorted(ranks.iterdir()) if ranks.exists() else []:
        checkpoint = IndexStore.open(share_dir).read_checkpoint()
        if checkpoint is None or DIGESTS_KEY not in checkpoint[0]:
            continue
        rank, world = (int(part) for part in share_dir.name.split("-of-"))
        stored = checkpoint[0][DIGESTS_KEY]
        lines += _compare(dataset, batch_size, [rank + i * world for i in range(stored.shape[0])], stored, progress)
    return lines


def _compare(dataset: Any, batch_size: int, numbers: list[int], stored: np.ndarray, progress: bool) -> list[str]:
    actual = batch_digests(dataset, batch_size, numbers, progress=progress)
    return digest_changes(stored, actual, numbers, batch_size, len(dataset))


class ConceptIndex:
    """A concept index on disk: RelMax/ActMax samples per concept, class statistics, optional relevance matrix.

    Open an index with :meth:`open`; pass the model, composite or dataset to check that the index belongs to them.
    An index still being written shows its latest checkpoints.
    """

    def __init__(self, store: IndexStore, arrays: dict[str, np.ndarray] | None, complete: bool) -> None:
        self.store = store
        self.manifest = store.manifest
        self.layers: list[str] = list(self.manifest["layers"])
        self.complete = complete
        self._arrays = arrays  # None: read each layer from the store when first asked for
        self._statistics: dict[str, LayerStatistics] = {}

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        model: torch.nn.Module | None = None,
        composite: zennit.core.Composite | None = None,
        dataset: Any = None,
        dataset_check: str = "full",
        progress: bool = True,
    ) -> ConceptIndex:
        """Open the index in ``directory``; with ``model``/``composite``/``dataset`` given, check they made it.

        Parameters
        ----------
        directory
            The index directory (:func:`build_index`'s).
        model, composite, dataset
            What the index should have been made with; any difference raises
            :class:`~glocal.index.storage.IndexMismatchError` (its message summarises, its ``differences`` lists all).
        dataset_check
            ``"full"``: hash every sample of ``dataset`` (reading it once, without running the model) and compare
            with the digests the scan kept, naming the samples that changed; ``"quick"``: only the length and 16
            evenly spaced samples.
        progress
            Show a progress bar while hashing the dataset.

        Raises
        ------
        IndexNotFoundError
            ``directory`` holds no index (the message says what it holds, e.g. a zennit-crp output folder).
        """
        if dataset_check not in ("full", "quick"):
            raise InputError(f"dataset_check must be 'full' or 'quick', got {dataset_check!r}")
        store = IndexStore.open(directory)
        manifest = store.manifest
        found: list[str] = []
        if model is not None:
            found += differences({"model": manifest["model"]}, {"model": model_fingerprint(model)})
        if composite is not None and model is not None:
            from ..lrp.composites import resolve as resolve_composite  # "auto": as build_index resolved it

            composite, _ = resolve_composite(model, composite)
            found += differences(
                {"composite": manifest["composite"]}, {"composite": composite_fingerprint(composite, model)}
            )
        if dataset is not None:
            plain = as_data(dataset)
            quick = differences({"dataset": manifest["dataset"]}, {"dataset": dataset_fingerprint(plain)})
            found += quick
            if not quick and dataset_check == "full":
                found += [f"dataset: {line} changed" for line in _check_dataset(store, plain, progress)]
        if found:
            raise mismatch_error(
                f"the index in {directory} was not made with what was given",
                found,
                "Open it without these arguments to read it anyway, or build a new index.",
            )
        if "scores" not in manifest and "imported_from" not in manifest:
            warn(
                f"the index in {directory} was built by an older glocal: its actmax_sum/actmax_max rank the raw "
                "activation (now the positive part, see glocal.index.statistics), it has no actmax_*_norm/_raw modes "
                "and no batch digests. Build it again for the current definitions."
            )
        if store.complete:
            return cls(store, None, True)
        arrays: dict[str, np.ndarray] = {}
        merged: dict[str, LayerStatistics] | None = None
        ranks = Path(directory) / "ranks"
        for share_dir in sorted(ranks.iterdir()) if ranks.exists() else []:
            checkpoint = IndexStore.open(share_dir).read_checkpoint()
            if checkpoint is None:
                continue
            stats = statistics_from_arrays(checkpoint[0], list(manifest["layers"]))
            merged = stats if merged is None else {layer: merged[layer].merge(stats[layer]) for layer in stats}
        if merged is not None:
            arrays = statistics_arrays(merged)
        return cls(store, arrays, False)

    @property
    def dataset_sha256(self) -> str | None:
        """The exact fingerprint of the indexed dataset (every sample; see :mod:`glocal.index.fingerprint`), once
        the index is complete; ``None`` before, or for an index made by an older glocal or imported."""
        value = self.store.result.get("dataset", {}).get("sha256")
        return None if value is None else str(value)

    # -- checks ------------------------------------------------------------------------------------------------------

    def _check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            raise LayerError(
                f"the index has no layer {layer!r}; it indexes {self.layers}. Give one of those, or build an index "
                f"of {layer!r}"
            )

    def _check_concept(self, layer: str, concept: Any) -> int:
        try:
            value = operator.index(concept)
        except TypeError:
            raise ConceptError(
                f"a concept is a channel number (an int), got {type(concept).__name__} {concept!r}"
            ) from None
        count = self.statistics(layer).concepts
        if not 0 <= value < count:
            raise ConceptError(
                f"concept {value} is out of range: layer {layer!r} has {count} concepts (channels 0 to {count - 1})"
            )
        return value

    @staticmethod
    def _check_n(n: int | None) -> None:
        if n is not None and (isinstance(n, bool) or operator.index(n) < 0):
            raise InputError(f"n is a number of samples >= 0 (or None for all), got {n!r}")

    # -- reading -----------------------------------------------------------------------------------------------------

    def statistics(self, layer: str) -> LayerStatistics:
        """All statistics of ``layer`` (read from disk on first use)."""
        self._check_layer(layer)
        if layer not in self._statistics:
            prefix = f"{layer}/"
            if self._arrays is None:
                arrays = {key[len(prefix) :]: self.store.read(key) for key in self.store if key.startswith(prefix)}
            else:
                arrays = {key[len(prefix) :]: value for key, value in self._arrays.items() if key.startswith(prefix)}
            arrays = {key: value for key, value in arrays.items() if MATRIX_KEY not in key}
            if not arrays:
                raise LayerError(
                    f"the index has no data for {layer!r} yet: the scan has not reached its first checkpoint. Wait for "
                    "it, or lower build_index's checkpoint_every"
                )
            self._statistics[layer] = LayerStatistics.from_arrays(arrays)
        return self._statistics[layer]

    def top(self, layer: str, mode: str = "relmax_sum") -> TopK:
        """The top-k state of ``mode`` (one of ``glocal.index.MODES``), as the scan kept it (scores of any sign)."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        return self.statistics(layer).top[mode]

    def samples(
        self, layer: str, concept: int, mode: str = "relmax_sum", n: int | None = None
    ) -> tuple[list[int], list[float], list[int]]:
        """Sample ids, scores and positions of the ``n`` samples that use (``relmax_*``) or excite (``actmax_*``)
        ``concept`` most, best first.

        Only samples with a positive score count: a sample whose concept has no positive relevance (or, for ActMax,
        no positive activation) is no reference of it. Fewer than ``n`` samples (or none) come back when fewer have a
        positive score among the ``k`` the index kept; the scores of the modes are defined in
        :mod:`glocal.index.statistics`.
        """
        self._check_n(n)
        top = self.top(layer, mode)
        concept = self._check_concept(layer, concept)
        keep = (top.ids[concept] >= 0) & (top.scores[concept] > 0)
        ids, scores, positions = top.ids[concept][keep], top.scores[concept][keep], top.positions[concept][keep]
        n = len(ids) if n is None else n
        return ids[:n].tolist(), scores[:n].tolist(), positions[:n].tolist()

    def _check_label(self, layer: str, label: Any) -> int:
        classes = self.statistics(layer).classes
        try:
            value = operator.index(label)
        except TypeError:
            raise TargetError(f"a class label is an int, got {type(label).__name__} {label!r}") from None
        if not 0 <= value < classes:
            raise TargetError(
                f"label {value} is not a class of the index: it has {classes} classes (0 to {classes - 1})"
            )
        return value

    def class_samples(
        self, layer: str, concept: int, label: int, n: int | None = None
    ) -> tuple[list[int], list[float]]:
        """The samples of class ``label`` that use ``concept`` most (RelMax, relevance summed over space), best
        first; only those with positive relevance (so possibly fewer than ``n``)."""
        self._check_n(n)
        concept = self._check_concept(layer, concept)
        label = self._check_label(layer, label)
        ids, scores, _ = self.statistics(layer).class_entries(label, concept)
        keep = scores > 0
        ids, scores = ids[keep], scores[keep]
        n = len(ids) if n is None else n
        return ids[:n].tolist(), scores[:n].tolist()

    def classes(self, layer: str, concept: int, n: int = 5, mean: bool = True) -> list[tuple[int, float]]:
        """The classes that use ``concept`` most: ``(class, mean or summed relevance)``, largest first.

        Only classes that occur in the scanned targets are listed (fewer than ``n`` when fewer occur): a class
        without samples has no relevance to rank, and must not come before classes whose relevance is negative.
        """
        self._check_n(n)
        concept = self._check_concept(layer, concept)
        stats = self.statistics(layer)
        assert stats.class_relevance is not None and stats.class_count is not None
        values = stats.class_relevance[:, concept]
        if mean:
            values = values / stats.class_count.clamp(min=1)
        seen = (stats.class_count > 0).nonzero().flatten()
        order = seen[values[seen].argsort(descending=True)][:n]
        return [(int(c), float(values[c])) for c in order]

    def matrix(self, layer: str) -> Any:
        """The ``(samples, concepts)`` float16 concept-relevance matrix (lazy), if the scan stored it."""
        self._check_layer(layer)
        try:
            return self.store.rows(f"{layer}/{MATRIX_KEY}")
        except IndexKeyError:
            raise IndexKeyError(
                f"the index at {self.store.path} holds no relevance matrix of {layer!r}"
                + (
                    ": it was built without store_matrix=True; build it again with store_matrix=True"
                    if self.complete
                    else " yet (the scan is in progress, or was started without store_matrix=True)"
                )
            ) from None
