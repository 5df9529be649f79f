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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import zennit.core

from ..attribution.concepts import ChannelConcept
from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor
from ..errors import InputError
from .fingerprint import batch_digest, sample_digest
from .statistics import LayerStatistics

__all__ = ["Batch", "ScanState", "batches_for", "iterate_batches", "scan_batch", "split_sample"]

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """Inputs ``(N, ...)``, dataset ``ids`` ``(N,)``, per-sample label lists (``None`` without labels) and the
    batch's digest (:func:`~glocal.index.fingerprint.batch_digest` of its items)."""

    ids: torch.Tensor
    inputs: torch.Tensor
    labels: list[list[int]] | None
    digest: bytes = b""


def split_sample(sample: Any) -> tuple[Any, Any]:
    """A dataset item as ``(input, label or None)``: ``(x, y, ...)`` tuples, ``{"image"/"input"/"x", "label"/"y"}``
    dicts, or a bare input."""
    if isinstance(sample, tuple | list) and len(sample) >= 2:
        return sample[0], sample[1]
    if isinstance(sample, tuple | list) and len(sample) == 1:
        return sample[0], None
    if isinstance(sample, dict):
        x = next((sample[key] for key in ("input", "image", "x", "data") if key in sample), None)
        if x is None:
            raise InputError(
                f"a dataset item is a dict with keys {sorted(sample)}; glocal looks for the input under 'input', "
                "'image', 'x' or 'data' and the label under 'label', 'target' or 'y'"
            )
        y = next((sample[key] for key in ("label", "labels", "target", "y") if key in sample), None)
        return x, y
    return sample, None


def label_list(label: Any) -> list[int]:
    """One sample's label(s) as a list of class indices: an int, a 0-d tensor, a list of ints, or a multi-hot vector."""
    if isinstance(label, torch.Tensor):
        if label.dim() == 0:
            return [int(label)]
        if label.dtype == torch.bool or (label.is_floating_point() and label.dim() == 1 and label.numel() > 1):
            return [int(i) for i in label.nonzero().flatten().tolist()]
        return [int(i) for i in label.flatten().tolist()]
    if isinstance(label, int) or hasattr(label, "__index__"):
        return [int(label)]
    return [int(i) for i in label]


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any, Any, bytes]:
        item = self.dataset[index]
        digest = sample_digest(index, item)  # hashed where it is loaded (in a worker, with num_workers > 0)
        x, y = split_sample(item)
        return index, torch.as_tensor(x), y, digest


def _collate(items: list[tuple[int, Any, Any, bytes]]) -> Batch:
    ids = torch.tensor([item[0] for item in items], dtype=torch.int64)
    inputs = torch.stack([item[1] for item in items])
    labels = None if any(item[2] is None for item in items) else [label_list(item[2]) for item in items]
    return Batch(ids, inputs, labels, batch_digest([item[3] for item in items]))


def batches_for(length: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """The fixed batches of a dataset of ``length`` samples that process ``rank`` of ``world`` scans."""
    starts = range(rank * batch_size, length, world * batch_size)
    return [list(range(start, min(start + batch_size, length))) for start in starts]


def iterate_batches(dataset: Any, batches: Sequence[list[int]], num_workers: int = 0) -> Iterator[Batch]:
    """Load the given batches in order, with ``num_workers`` DataLoader workers."""
    loader = torch.utils.data.DataLoader(
        _Indexed(dataset), batch_sampler=list(batches), num_workers=num_workers, collate_fn=_collate
    )
    yield from loader


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
        scores = prediction.flatten(2).sum(-1) if prediction.dim() > 2 else prediction
        labels = [[int(i)] for i in scores.argmax(1).tolist()]
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
    state.digests.append(batch.digest)
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
    share = batches_for(len(dataset), batch_size, rank, world)
    batches = share[state.batches_done :]
    bar = _progress(len(share), progress, state.batches_done)
    started, first = time.perf_counter(), state.samples_done
    with attributor.attached(state.layers) as start:  # rules and canonizers attached once for the whole scan
        for batch in iterate_batches(dataset, batches, num_workers):
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
