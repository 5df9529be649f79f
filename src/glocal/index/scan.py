"""One pass over a dataset: per layer and concept, the samples that use (RelMax) and excite (ActMax) it most.

The dataset is cut into fixed batches ``b = 0, 1, ...`` of consecutive indices. A process of a distributed run scans
the batches ``b = rank, rank + world, ...``; a resumed run continues after the last checkpointed batch. Because every
batch is computed the same way wherever it runs and the top-k order is total (see :mod:`glocal.index.topk`), the
result does not depend on how the work was split or interrupted.

Each sample is hashed as it is loaded (:func:`~glocal.index.fingerprint.sample_digest`), and each batch's digest is
kept (:attr:`ScanState.digests`): together they are the exact fingerprint of the dataset, at no extra pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import zennit.core

from ..attribution.concepts import ChannelConcept
from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor
from ..attribution.targets import predicted
from ..data import Batch, fixed_batches, load_batches
from ..errors import InputError
from .fingerprint import batch_digest, sample_digest
from .statistics import LayerStatistics

__all__ = ["ScanState", "run_scan", "scan_batch"]

logger = logging.getLogger(__name__)


@dataclass
class ScanState:
    """Statistics per layer, created at the first batch (when the layers' shapes are known), and the digests of the
    batches done so far, in the order scanned."""

    layers: list[str]
    k: int
    statistics: dict[str, LayerStatistics] | None = None
    batches_done: int = 0
    samples_done: int = 0
    class_k: int | None = None
    digests: list[bytes] = field(default_factory=list)


def scan_batch(
    attributor: Attributor,
    state: ScanState,
    batch: Batch,
    targets: str,
    matrix_writer: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
) -> None:
    """Update ``state`` with one batch: one forward pass, one backward pass to the lowest indexed layer.

    ``targets`` is ``"label"`` (relevance from each sample's label(s)) or ``"prediction"`` (from its predicted
    class). Multi-label samples get one more backward pass per extra label for the class statistics.
    """
    with attributor.attached(state.layers) as start:
        _scan_run(start, state, batch, targets, matrix_writer)


def _scan_run(
    start: Callable[..., Any],
    state: ScanState,
    batch: Batch,
    targets: str,
    matrix_writer: Callable[[str, torch.Tensor, torch.Tensor], None] | None,
) -> None:
    """One batch on an already attached model (see :meth:`glocal.Attributor.attached`)."""
    run = start(batch.inputs, record=state.layers, heatmap=False, input_grad=False)
    prediction = run.output.detach()
    if targets == "label":
        if batch.labels is None:
            raise InputError(
                "targets='label' but the dataset items carry no labels; use targets='prediction' or a dataset "
                "of (input, label) pairs"
            )
        labels = batch.labels
    else:
        labels = [[i] for i in predicted(prediction)]
    result = run.attribute(Condition(targets=PerSample(labels)))
    per_class: dict[str, torch.Tensor] | None = None
    width = max(len(label) for label in labels)
    if width > 1:
        passes = run.attribute(
            [Condition(targets=PerSample([label[m : m + 1] for label in labels])) for m in range(width)]
        )
        per_class = {name: passes.grid(passes.relevances[name]) for name in state.layers}
    if state.statistics is None:
        classes = prediction.shape[1] if prediction.dim() > 1 else 1
        state.statistics = {
            name: LayerStatistics(
                ChannelConcept().count(result.activations[name].shape[1:]), classes, state.k, class_k=state.class_k
            )
            for name in state.layers
        }
    for name in state.layers:
        relevance = result.relevances[name]
        state.statistics[name].update(
            batch.ids,
            relevance,
            result.activations[name],
            labels,
            None if per_class is None else per_class[name],
        )
        if matrix_writer is not None:
            matrix_writer(name, batch.ids, ChannelConcept().relevance(relevance))
    state.digests.append(batch_digest(batch.digests))
    state.batches_done += 1
    state.samples_done += len(batch.ids)


def run_scan(
    model: torch.nn.Module,
    composite: zennit.core.Composite | None,
    dataset: Any,
    layers: Sequence[str],
    *,
    k: int = 40,
    class_k: int | None = None,
    targets: str = "label",
    batch_size: int = 32,
    num_workers: int = 0,
    rank: int = 0,
    world: int = 1,
    state: ScanState | None = None,
    on_batch: Callable[[ScanState], None] | None = None,
    matrix_writer: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
    progress: bool = True,
) -> ScanState:
    """Scan this process's share of ``dataset``, continuing ``state`` if given; ``on_batch`` runs after each batch.

    A resumed scan's progress bar starts at the batches already done.
    """
    attributor = Attributor(model, composite)
    state = state or ScanState(list(layers), k, class_k=class_k)
    share = fixed_batches(len(dataset), batch_size, rank, world)
    batches = share[state.batches_done :]
    bar = _progress(len(share), progress, state.batches_done)
    started, first = time.perf_counter(), state.samples_done
    with attributor.attached(state.layers) as start:  # rules and canonizers attached once for the whole scan
        for batch in load_batches(dataset, batches, num_workers, digest=sample_digest):
            _scan_run(start, state, batch, targets, matrix_writer)
            if on_batch is not None:
                on_batch(state)
            if bar is not None:
                bar.update(1)
                rate = (state.samples_done - first) / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(samples_per_s=f"{rate:.1f}")
    if bar is not None:
        bar.close()
    return state


def _progress(total: int, enabled: bool, done: int = 0) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but a progress bar is not worth failing over
        return None
    description = "glocal scan (resumed)" if done else "glocal scan"
    return tqdm(total=total, initial=done, desc=description, unit="batch", dynamic_ncols=True)
