"""Build a concept index on disk (resumable, distributed) and read it back.

>>> import tempfile, torch
>>> from zennit.composites import EpsilonPlusFlat
>>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
>>> data = torch.utils.data.TensorDataset(torch.rand(20, 1, 8, 8), torch.randint(0, 3, (20,)))
>>> index = build_index(model, EpsilonPlusFlat(), data, ["0"], tempfile.mkdtemp() + "/index", k=5, progress=False)
>>> ids, scores, positions = index.samples("0", concept=2, mode="relmax_sum", n=3)  # top users of channel 2
>>> len(ids), scores == sorted(scores, reverse=True)
(3, True)

Layout: the index directory holds the final arrays and manifest (:class:`~.storage.IndexStore`); each process of a run
checkpoints its own share under ``ranks/<rank>-of-<world>/``. A scan killed at any moment and started again with the
same arguments continues after its last checkpoint and ends with the same index as an uninterrupted one.

The scan hashes every sample as it loads it; the index keeps one digest per batch and, once complete, the exact
dataset fingerprint (:attr:`ConceptIndex.dataset_sha256`; see :mod:`glocal.index.fingerprint`). A resumed scan first
re-hashes the samples it had done (reading them, without running the model) and stops if any changed;
:meth:`ConceptIndex.open` given the dataset checks every sample the same way.

Distributed runs: start one process per rank with ``torchrun`` (or any launcher) and call
``torch.distributed.init_process_group`` (``gloo`` on CPU, ``nccl`` on GPU) before :func:`build_index`; each rank scans
the batches ``rank, rank + world, ...``, and rank 0 merges the shares (exactly) and writes the index. Without a shared
file system every machine keeps its own checkpoints; the per-sample matrix (``store_matrix=True``) needs the index
directory to be shared.
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

from .._version import __version__
from ..data import as_data, default_batch_size, fixed_batches, has_labels, sample_count
from ..errors import ConceptError, InputError, LayerError, TargetError, warn
from ..progress import progress_bar
from .fingerprint import (
    DIGEST_BYTES,
    batch_digests,
    combine_digests,
    composite_fingerprint,
    dataset_fingerprint,
    differences,
    digest_changes,
    model_fingerprint,
)
from .scan import ScanState, run_scan
from .statistics import MODES, LayerStatistics
from .storage import IndexKeyError, IndexStore, mismatch_error
from .topk import TopK

__all__ = ["ConceptIndex", "build_index"]

logger = logging.getLogger(__name__)

_MATRIX = "matrix"
# the definitions of the scores (glocal.index.statistics); 2: positive ActMax, zennit-crp's ActMax modes, batch digests.
# A manifest without it was written by an older glocal, whose actmax_* ranked the raw activation.
_SCORES = 2
_DIGESTS = "__dataset__/batch_digests"  # (batches, 32) uint8: each fixed batch's digest (a rank's share in checkpoints)


def _digest_rows(digests: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), DIGEST_BYTES).copy()


def _interleave(shares: Sequence[np.ndarray], world: int) -> np.ndarray:
    """The batch digests of all ranks in batch order (rank ``r`` scanned batches ``r, r + world, ...``)."""
    total = sum(share.shape[0] for share in shares)
    out = np.zeros((total, DIGEST_BYTES), dtype=np.uint8)
    for rank, share in enumerate(shares):
        out[rank : rank + world * share.shape[0] : world] = share
    return out


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


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
    from ..lrp.composites import resolve as resolve_composite  # "auto": the composite glocal.lrp.composites.auto picks

    composite, _ = resolve_composite(model, composite)
    batch_size = default_batch_size(dataset, batch_size)
    dataset = as_data(dataset)
    sample_count(dataset)
    if targets == "auto":
        targets = "label" if has_labels(dataset) else "prediction"
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
        "scores": _SCORES,
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
        mine = fixed_batches(len(dataset), batch_size, rank, world)
        logger.info(
            "resuming the scan in %s%s: %d of %d batches (%d samples) were done; checking that those samples are "
            "unchanged, then continuing",
            directory,
            f" (rank {rank} of {world})" if world > 1 else "",
            state.batches_done,
            len(mine),
            state.samples_done,
        )
        state.digests = _check_resumed(dataset, batch_size, rank, world, arrays.get(_DIGESTS), state, num_workers)

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
                {**_flatten(current.statistics), _DIGESTS: _digest_rows(current.digests)},
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
    arrays[_DIGESTS] = _digest_rows(state.digests)
    if world > 1 and state.statistics is not None and state.batches_done % checkpoint_every != 0:
        # a rank's final state outlives it until rank 0 has merged (one process writes its results right away)
        share.write_checkpoint(
            state.batches_done, arrays, {"batches_done": state.batches_done, "samples_done": state.samples_done}
        )
    if world > 1:
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        torch.distributed.gather_object(arrays, gathered, dst=0)
        everything = list(gathered or [])
    else:
        everything = [arrays]
    if rank == 0:
        assert root is not None
        digests = _interleave([share.pop(_DIGESTS) for share in everything], world)
        shares = [share for share in everything if share]  # ranks with no batches have no statistics
        if len(shares) == 1:
            results = shares[0]
        else:
            merged = _unflatten(shares[0], layers)
            for other in shares[1:]:
                other_stats = _unflatten(other, layers)
                merged = {layer: merged[layer].merge(other_stats[layer]) for layer in layers}
            results = _flatten(merged)
        if store_matrix:
            _merge_matrices(directory, root, layers, world, batch_size, len(dataset), progress)
        root.write_results({**results, _DIGESTS: digests})
        fingerprint = combine_digests(len(dataset), batch_size, digests)
        root.mark_complete({"dataset": {"sha256": fingerprint, "samples": len(dataset), "batch_size": batch_size}})
    if world > 1:
        torch.distributed.barrier()
    return ConceptIndex.open(directory)


def _merge_matrices(
    directory: Path, root: IndexStore, layers: Sequence[str], world: int, batch_size: int, length: int, progress: bool
) -> None:
    """Copy each rank's rows of the per-sample matrices into the index (rank ``r`` holds batches ``r + i * world``)."""
    parts = [IndexStore.open(directory / "ranks" / f"{r}-of-{world}") for r in range(world)]
    bar = progress_bar(len(layers) * world, "glocal: merging matrices", enabled=progress, unit="share")
    for layer in layers:
        key = f"{layer}/{_MATRIX}"
        first = parts[0].rows(key)
        target = root.open_rows(key, tuple(first.shape), np.float16)
        for r, part in enumerate(parts):
            rows = part.rows(key)
            for start in range(r * batch_size, length, world * batch_size):
                target[start : start + batch_size] = rows[start : start + batch_size]
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()


def _check_resumed(
    dataset: Any,
    batch_size: int,
    rank: int,
    world: int,
    stored: np.ndarray | None,
    state: ScanState,
    num_workers: int,
) -> list[bytes]:
    """Re-hash the batches a resumed scan had done; the digests, or an error naming the samples that changed."""
    numbers = [rank + i * world for i in range(state.batches_done)]
    actual = batch_digests(dataset, batch_size, numbers, num_workers=num_workers, progress=rank == 0)
    if stored is not None:
        changes = digest_changes(np.asarray(stored), actual, numbers, batch_size, len(dataset))
        if changes:
            raise mismatch_error(
                "the dataset changed since the interrupted scan: samples it had already scanned differ now",
                changes,
                "Resume with the same data, or start a new index in another directory (or delete this one).",
            )
    return [bytes(row) for row in actual]


def _check_dataset(store: IndexStore, dataset: Any, progress: bool) -> list[str]:
    """Every sample of ``dataset`` against the batch digests the index kept; lines naming those that differ."""
    batch_size = int(store.manifest["batch_size"])
    if store.complete:
        try:
            stored = store.read(_DIGESTS)
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
        if checkpoint is None or _DIGESTS not in checkpoint[0]:
            continue
        rank, world = (int(part) for part in share_dir.name.split("-of-"))
        stored = checkpoint[0][_DIGESTS]
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
            stats = _unflatten(checkpoint[0], list(manifest["layers"]))
            merged = stats if merged is None else {layer: merged[layer].merge(stats[layer]) for layer in stats}
        if merged is not None:
            arrays = _flatten(merged)
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
            arrays = {key: value for key, value in arrays.items() if _MATRIX not in key}
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
            return self.store.rows(f"{layer}/{_MATRIX}")
        except IndexKeyError:
            raise IndexKeyError(
                f"the index at {self.store.path} holds no relevance matrix of {layer!r}"
                + (
                    ": it was built without store_matrix=True; build it again with store_matrix=True"
                    if self.complete
                    else " yet (the scan is in progress, or was started without store_matrix=True)"
                )
            ) from None
