"""Build a concept index on disk (resumable, distributed) and read it back.

>>> import tempfile, torch
>>> from zennit.composites import EpsilonPlusFlat
>>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
>>> data = torch.utils.data.TensorDataset(torch.rand(20, 1, 8, 8), torch.randint(0, 3, (20,)))
>>> index = build_index(model, EpsilonPlusFlat(), data, ["0"], tempfile.mkdtemp() + "/index", k=5, progress=False)
>>> ids, scores, positions = index.samples("0", concept=2, mode="relmax_sum", n=3)  # top users of channel 2
>>> len(ids), scores == sorted(scores, reverse=True)
(3, True)

Layout: the index directory holds the final arrays and manifest (:class:`~glocal.storage.IndexStore`); each process
of a run checkpoints its own share under ``ranks/<rank>-of-<world>/``. A scan killed at any moment and started again
with the same arguments continues after its last checkpoint and ends with the same index as an uninterrupted one.

Distributed runs: start one process per rank with ``torchrun`` (or any launcher) and call
``torch.distributed.init_process_group`` (``gloo`` on CPU, ``nccl`` on GPU) before :func:`build_index`; each rank scans
the batches ``rank, rank + world, ...``, and rank 0 merges the shares (exactly) and writes the index. Without a shared
file system every machine keeps its own checkpoints; the per-sample matrix (``store_matrix=True``) needs the index
directory to be shared.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zennit.core

from .._version import __version__
from ..errors import InputError
from ..storage import IndexMismatchError, IndexStore
from .fingerprint import composite_fingerprint, dataset_fingerprint, differences, model_fingerprint
from .scan import ScanState, run_scan, split_sample
from .statistics import MODES, LayerStatistics
from .topk import TopK

__all__ = ["ConceptIndex", "build_index"]

logger = logging.getLogger(__name__)

_MATRIX = "matrix"


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _unwrap(dataset: Any, batch_size: int | None) -> tuple[Any, int]:
    if isinstance(dataset, torch.utils.data.DataLoader):
        return dataset.dataset, batch_size or dataset.batch_size or 32
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise InputError(
            f"the dataset must be a map-style torch Dataset (with __len__ and __getitem__) or a DataLoader over one, "
            f"got {type(dataset).__name__}"
        )
    return dataset, batch_size or 32


def _flatten(statistics: dict[str, LayerStatistics]) -> dict[str, np.ndarray]:
    return {f"{layer}/{key}": value for layer, stats in statistics.items() for key, value in stats.arrays().items()}


def _unflatten(arrays: dict[str, np.ndarray], layers: Sequence[str]) -> dict[str, LayerStatistics]:
    out = {}
    for layer in layers:
        prefix = f"{layer}/"
        out[layer] = LayerStatistics.from_arrays(
            {
                key[len(prefix) :]: value
                for key, value in arrays.items()
                if key.startswith(prefix) and _MATRIX not in key
            }
        )
    return out


def build_index(
    model: torch.nn.Module,
    composite: zennit.core.Composite | None,
    dataset: Any,
    layers: Sequence[str],
    directory: str | Path,
    *,
    k: int = 40,
    class_k: int | None = None,
    targets: str = "auto",
    batch_size: int | None = None,
    num_workers: int = 0,
    store_matrix: bool = False,
    checkpoint_every: int = 20,
    progress: bool = True,
) -> ConceptIndex:
    """Scan ``dataset`` once and write the concept index of ``layers`` to ``directory``.

    Parameters
    ----------
    model, composite
        The model and the zennit composite whose relevance is indexed.
    dataset
        A map-style torch Dataset of ``input`` or ``(input, label)`` items, or a DataLoader over one (its batch size
        is used; the order is always the dataset's).
    layers
        Layer names to index (their channels are the concepts).
    directory
        Where the index lives. An existing index of the same model, composite, dataset and settings is resumed (or
        returned when complete); one of anything else is an error that names the difference.
    k
        How many top samples to keep per concept.
    class_k
        How many per class and concept (default ``min(k, 10)``); only classes that occur take memory.
    targets
        Where relevance starts: ``"label"`` (each sample's label or labels; multi-label items have several),
        ``"prediction"`` (the predicted class), or ``"auto"``: labels when the dataset has them.
    batch_size, num_workers
        Batching of the scan and DataLoader workers feeding it.
    store_matrix
        Also store the full ``(samples, concepts)`` float16 matrix of concept relevances per layer.
    checkpoint_every
        Batches between checkpoints.
    """
    dataset, batch_size = _unwrap(dataset, batch_size)
    if len(dataset) == 0:
        raise InputError("the dataset is empty")
    if targets == "auto":
        targets = "label" if split_sample(dataset[0])[1] is not None else "prediction"
    if targets not in ("label", "prediction"):
        raise ValueError(f"targets must be 'label', 'prediction' or 'auto', got {targets!r}")
    rank, world = _distributed()
    layers = list(dict.fromkeys(layers))
    manifest = {
        "glocal": __version__,
        "model": model_fingerprint(model),
        "composite": composite_fingerprint(composite, model),
        "dataset": dataset_fingerprint(dataset),
        "layers": layers,
        "k": k,
        "class_k": class_k if class_k is not None else min(k, 10),
        "targets": targets,
        "batch_size": batch_size,
        "store_matrix": store_matrix,
    }
    directory = Path(directory)
    root = IndexStore.create(directory, manifest) if rank == 0 else None
    if world > 1:
        torch.distributed.barrier()
    if root is not None and root.complete:
        return ConceptIndex.open(directory)
    share = IndexStore.create(directory / "ranks" / f"{rank}-of-{world}", {**manifest, "rank": rank, "world": world})

    class_k = class_k if class_k is not None else min(k, 10)
    state = ScanState(layers, k, class_k=class_k)
    checkpoint = share.read_checkpoint()
    if checkpoint is not None:
        arrays, done = checkpoint
        state = ScanState(
            layers, k, _unflatten(arrays, layers), int(done["batches_done"]), int(done["samples_done"]), class_k
        )
        logger.info("resuming %s after %d batches", directory, state.batches_done)

    matrices: dict[str, Any] = {}

    def write_rows(layer: str, ids: torch.Tensor, rows: torch.Tensor) -> None:
        if layer not in matrices:
            matrices[layer] = share.open_rows(f"{layer}/{_MATRIX}", (len(dataset), rows.shape[1]))
        matrix = matrices[layer]
        start, stop = int(ids[0]), int(ids[-1]) + 1  # batches are runs of consecutive ids
        matrix[start:stop] = rows.detach().to(torch.float16).cpu().numpy()

    def checkpoint_now(current: ScanState) -> None:
        if current.statistics is not None and current.batches_done % checkpoint_every == 0:
            share.write_checkpoint(
                current.batches_done,
                _flatten(current.statistics),
                {"batches_done": current.batches_done, "samples_done": current.samples_done},
            )

    state = run_scan(
        model,
        composite,
        dataset,
        layers,
        k=k,
        class_k=class_k,
        targets=targets,
        batch_size=batch_size,
        num_workers=num_workers,
        rank=rank,
        world=world,
        state=state,
        on_batch=checkpoint_now,
        matrix_writer=write_rows if store_matrix else None,
        progress=progress and rank == 0,
    )
    arrays = _flatten(state.statistics) if state.statistics is not None else {}
    if world > 1 and state.statistics is not None and state.batches_done % checkpoint_every != 0:
        # a rank's final state outlives it until rank 0 has merged (one process writes its results right away)
        share.write_checkpoint(
            state.batches_done, arrays, {"batches_done": state.batches_done, "samples_done": state.samples_done}
        )
    if world > 1:
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        torch.distributed.gather_object(arrays, gathered, dst=0)
        shares = [g for g in (gathered or []) if g]
    else:
        shares = [arrays]
    if rank == 0:
        assert root is not None
        if len(shares) == 1:
            results = shares[0]
        else:
            merged = _unflatten(shares[0], layers)
            for other in shares[1:]:
                other_stats = _unflatten(other, layers)
                merged = {layer: merged[layer].merge(other_stats[layer]) for layer in layers}
            results = _flatten(merged)
        if store_matrix:
            for layer in layers:
                key = f"{layer}/{_MATRIX}"
                parts = [IndexStore.open(directory / "ranks" / f"{r}-of-{world}") for r in range(world)]
                first = parts[0].rows(key)
                target = root.open_rows(key, tuple(first.shape), np.float16)
                for r, part in enumerate(parts):
                    rows = part.rows(key)
                    for start in range(r * batch_size, len(dataset), world * batch_size):
                        target[start : start + batch_size] = rows[start : start + batch_size]
        root.write_results(results)
        root.mark_complete()
    if world > 1:
        torch.distributed.barrier()
    return ConceptIndex.open(directory)


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
    ) -> ConceptIndex:
        """Open the index in ``directory``; with ``model``/``composite``/``dataset`` given, check they made it."""
        store = IndexStore.open(directory)
        manifest = store.manifest
        found: list[str] = []
        if model is not None:
            found += differences({"model": manifest["model"]}, {"model": model_fingerprint(model)})
        if composite is not None and model is not None:
            found += differences(
                {"composite": manifest["composite"]}, {"composite": composite_fingerprint(composite, model)}
            )
        if dataset is not None:
            found += differences(
                {"dataset": manifest["dataset"]}, {"dataset": dataset_fingerprint(_unwrap(dataset, None)[0])}
            )
        if found:
            listed = "\n  ".join(found)
            raise IndexMismatchError(
                f"the index in {directory} was not made with what was given:\n  {listed}\n"
                "Open it without these arguments to read it anyway, or build a new index."
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
            stats = _unflatten(checkpoint[0], list(manifest["layers"]))
            merged = stats if merged is None else {layer: merged[layer].merge(stats[layer]) for layer in stats}
        if merged is not None:
            arrays = _flatten(merged)
        return cls(store, arrays, False)

    def statistics(self, layer: str) -> LayerStatistics:
        """All statistics of ``layer`` (read from disk on first use)."""
        if layer not in self.layers:
            raise KeyError(f"the index has no layer {layer!r}; it indexes {self.layers}")
        if layer not in self._statistics:
            prefix = f"{layer}/"
            if self._arrays is None:
                arrays = {key[len(prefix) :]: self.store.read(key) for key in self.store if key.startswith(prefix)}
            else:
                arrays = {key[len(prefix) :]: value for key, value in self._arrays.items() if key.startswith(prefix)}
            arrays = {key: value for key, value in arrays.items() if _MATRIX not in key}
            if not arrays:
                raise KeyError(f"the index has no data for {layer!r} yet (the scan has not reached a checkpoint)")
            self._statistics[layer] = LayerStatistics.from_arrays(arrays)
        return self._statistics[layer]

    def top(self, layer: str, mode: str = "relmax_sum") -> TopK:
        """The top-k state of ``mode`` (one of ``glocal.index.statistics.MODES``)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return self.statistics(layer).top[mode]

    def samples(
        self, layer: str, concept: int, mode: str = "relmax_sum", n: int | None = None
    ) -> tuple[list[int], list[float], list[int]]:
        """Sample ids, scores and positions of the ``n`` samples that use (``relmax_*``) or excite (``actmax_*``)
        ``concept`` most, best first."""
        top = self.top(layer, mode)
        keep = top.ids[concept] >= 0
        ids, scores, positions = top.ids[concept][keep], top.scores[concept][keep], top.positions[concept][keep]
        n = len(ids) if n is None else n
        return ids[:n].tolist(), scores[:n].tolist(), positions[:n].tolist()

    def class_samples(
        self, layer: str, concept: int, label: int, n: int | None = None
    ) -> tuple[list[int], list[float]]:
        """The samples of class ``label`` that use ``concept`` most (RelMax, relevance summed over space)."""
        ids, scores, _ = self.statistics(layer).class_entries(label, concept)
        n = len(ids) if n is None else n
        return ids[:n].tolist(), scores[:n].tolist()

    def classes(self, layer: str, concept: int, n: int = 5, mean: bool = True) -> list[tuple[int, float]]:
        """The classes that use ``concept`` most: ``(class, mean or summed relevance)``, largest first."""
        stats = self.statistics(layer)
        assert stats.class_relevance is not None and stats.class_count is not None
        values = stats.class_relevance[:, concept]
        if mean:
            values = values / stats.class_count.clamp(min=1)
        order = values.argsort(descending=True)[:n]
        return [(int(c), float(values[c])) for c in order]

    def matrix(self, layer: str) -> Any:
        """The ``(samples, concepts)`` float16 concept-relevance matrix (lazy), if the scan stored it."""
        return self.store.rows(f"{layer}/{_MATRIX}")
