"""Build a concept index on disk: one scan of the dataset, resumable after a crash, distributed over processes.

>>> import tempfile, torch
>>> from zennit.composites import EpsilonPlusFlat
>>> _ = torch.manual_seed(0)
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
:meth:`ConceptIndex.open` given the dataset checks every sample the same way. Reading an index is
:mod:`glocal.index.concept_index`.

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
from ..data import as_data, default_batch_size, fixed_batches, has_labels, sample_count
from ..progress import progress_bar
from .concept_index import DIGESTS_KEY, MATRIX_KEY, ConceptIndex, statistics_arrays, statistics_from_arrays
from .fingerprint import (
    DIGEST_BYTES,
    batch_digests,
    combine_digests,
    composite_fingerprint,
    dataset_fingerprint,
    digest_changes,
    model_fingerprint,
)
from .scan import ScanState, run_scan
from .storage import IndexStore, mismatch_error

__all__ = ["ConceptIndex", "build_index"]

logger = logging.getLogger(__name__)

# the definitions of the scores (glocal.index.statistics); 2: positive ActMax, zennit-crp's ActMax modes, batch digests.
# A manifest without it was written by an older glocal, whose actmax_* ranked the raw activation.
_SCORES = 2


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
            layers,
            k,
            statistics_from_arrays(arrays, layers),
            int(done["batches_done"]),
            int(done["samples_done"]),
            class_k,
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
        state.digests = _check_resumed(dataset, batch_size, rank, world, arrays.get(DIGESTS_KEY), state, num_workers)

    matrices: dict[str, Any] = {}

    def write_rows(layer: str, ids: torch.Tensor, rows: torch.Tensor) -> None:
        if layer not in matrices:
            matrices[layer] = share.open_rows(f"{layer}/{MATRIX_KEY}", (len(dataset), rows.shape[1]))
        matrix = matrices[layer]
        start, stop = int(ids[0]), int(ids[-1]) + 1  # batches are runs of consecutive ids
        matrix[start:stop] = rows.detach().to(torch.float16).cpu().numpy()

    def checkpoint_now(current: ScanState) -> None:
        if current.statistics is not None and current.batches_done % checkpoint_every == 0:
            share.write_checkpoint(
                current.batches_done,
                {**statistics_arrays(current.statistics), DIGESTS_KEY: _digest_rows(current.digests)},
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
    arrays = statistics_arrays(state.statistics) if state.statistics is not None else {}
    arrays[DIGESTS_KEY] = _digest_rows(state.digests)
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
        digests = _interleave([share.pop(DIGESTS_KEY) for share in everything], world)
        shares = [share for share in everything if share]  # ranks with no batches have no statistics
        if len(shares) == 1:
            results = shares[0]
        else:
            merged = statistics_from_arrays(shares[0], layers)
            for other in shares[1:]:
                other_stats = statistics_from_arrays(other, layers)
                merged = {layer: merged[layer].merge(other_stats[layer]) for layer in layers}
            results = statistics_arrays(merged)
        if store_matrix:
            _merge_matrices(directory, root, layers, world, batch_size, len(dataset), progress)
        root.write_results({**results, DIGESTS_KEY: digests})
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
        key = f"{layer}/{MATRIX_KEY}"
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
