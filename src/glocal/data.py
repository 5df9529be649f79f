"""User data in; batches and per-sample targets out. Every dataset-wide function reads the user's data through here.

Data comes as

- a tensor of inputs ``(N, ...)`` (no labels);
- a map-style dataset (``__len__`` and ``__getitem__``) whose items are a bare input, an ``(input, label, ...)``
  tuple, or a dict with the input under ``"input"``, ``"image"``, ``"x"`` or ``"data"`` and the label under
  ``"label"``, ``"labels"``, ``"target"`` or ``"y"``;
- a ``DataLoader`` over such a dataset: its dataset is read in the dataset's own order (so that sample ``i`` is always
  the same sample), and its batch size is the default batch size.

A label is an int, a 0-d tensor, a list of ints, or a multi-hot vector (multi-label data); :func:`label_list` turns
each into a list of class indices. Targets, the output unit each sample's relevance starts from, are ``"label"``,
``"prediction"``, ``"auto"`` (labels where the data has them) or one int per sample (:func:`check_targets`,
:func:`batch_targets`).

>>> import torch
>>> dataset = [(torch.zeros(1, 2, 2), 3), (torch.ones(1, 2, 2), torch.tensor([1, 0, 1.0]))]
>>> [batch.labels for batch in batches(dataset, batch_size=1)]
[[[3]], [[0, 2]]]
>>> check_targets("auto", dataset), check_targets("auto", torch.zeros(2, 1, 2, 2))
('label', 'prediction')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .attribution.targets import predicted
from .errors import InputError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Batch",
    "Targets",
    "as_data",
    "batch_targets",
    "batches",
    "check_targets",
    "default_batch_size",
    "fixed_batches",
    "has_labels",
    "label_list",
    "load_batches",
    "load_samples",
    "model_device",
    "sample_count",
    "split_sample",
]

DEFAULT_BATCH_SIZE = 32
"""The batch size when neither the call nor a given DataLoader sets one."""

Targets = Literal["auto", "label", "prediction"] | Sequence[int] | torch.Tensor

_INPUT_KEYS = ("input", "image", "x", "data")
_LABEL_KEYS = ("label", "labels", "target", "y")


@dataclass(frozen=True)
class Batch:
    """Inputs ``(N, ...)``, their positions in the dataset ``ids`` ``(N,)``, per-sample label lists (``None`` when the
    items carry no labels) and, when :func:`load_batches` was given a ``digest`` function, one digest per sample."""

    ids: torch.Tensor
    inputs: torch.Tensor
    labels: list[list[int]] | None
    digests: tuple[bytes, ...] = ()

    @property
    def start(self) -> int:
        """The dataset position of the batch's first sample."""
        return int(self.ids[0])


def split_sample(item: Any) -> tuple[Any, Any]:
    """A dataset item as ``(input, label or None)``: ``(x, y, ...)`` tuples, dicts (see the module docstring), or a
    bare input."""
    if isinstance(item, tuple | list) and len(item) >= 2:
        return item[0], item[1]
    if isinstance(item, tuple | list) and len(item) == 1:
        return item[0], None
    if isinstance(item, dict):
        x = next((item[key] for key in _INPUT_KEYS if key in item), None)
        if x is None:
            raise InputError(
                f"a dataset item is a dict with keys {sorted(item)}; glocal looks for the input under 'input', "
                "'image', 'x' or 'data' and the label under 'label', 'target' or 'y'"
            )
        y = next((item[key] for key in _LABEL_KEYS if key in item), None)
        return x, y
    return item, None


def label_list(label: Any) -> list[int]:
    """One sample's label(s) as a list of class indices: an int, a 0-d tensor, a list of ints, or a multi-hot vector.

    >>> label_list(3), label_list(torch.tensor(3)), label_list([1, 4]), label_list(torch.tensor([0.0, 1.0, 1.0]))
    ([3], [3], [1, 4], [1, 2])
    """
    if isinstance(label, torch.Tensor):
        if label.dim() == 0:
            return [int(label)]
        if label.dtype == torch.bool or (label.is_floating_point() and label.dim() == 1 and label.numel() > 1):
            return [int(i) for i in label.nonzero().flatten().tolist()]
        return [int(i) for i in label.flatten().tolist()]
    if isinstance(label, int) or hasattr(label, "__index__"):
        return [int(label)]
    return [int(i) for i in label]


def as_data(data: Any) -> Any:
    """The indexable data behind ``data``: a tensor or map-style dataset as it is, a DataLoader's dataset."""
    if isinstance(data, torch.utils.data.DataLoader):
        return data.dataset
    if isinstance(data, torch.Tensor):
        return data
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise InputError(
            f"data must be a tensor of inputs (N, ...), a map-style dataset (with __len__ and __getitem__) of `input` "
            f"or `(input, label)` items, or a DataLoader over one; got {type(data).__name__}. An iterable-style "
            "dataset cannot be indexed: load it into a tensor or a list first."
        )
    return data


def default_batch_size(data: Any, batch_size: int | None) -> int:
    """``batch_size``, else a DataLoader's own batch size, else :data:`DEFAULT_BATCH_SIZE`."""
    if batch_size is not None:
        return batch_size
    if isinstance(data, torch.utils.data.DataLoader) and data.batch_size:
        return int(data.batch_size)
    return DEFAULT_BATCH_SIZE


def sample_count(data: Any) -> int:
    """The number of samples of (unwrapped) ``data``; raises :class:`~glocal.InputError` when it has none."""
    n = int(data.shape[0]) if isinstance(data, torch.Tensor) else len(data)
    if n == 0:
        raise InputError("the data holds no samples; give at least one")
    return n


def has_labels(data: Any) -> bool:
    """Whether (unwrapped, non-empty) ``data``'s items carry labels (judged by the first item)."""
    return not isinstance(data, torch.Tensor) and split_sample(data[0])[1] is not None


def fixed_batches(length: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """The fixed batches of consecutive samples of a dataset of ``length`` that process ``rank`` of ``world`` reads
    (batch ``b`` goes to rank ``b % world``).

    >>> fixed_batches(10, 4), fixed_batches(10, 4, rank=1, world=2)
    ([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], [[4, 5, 6, 7]])
    """
    starts = range(rank * batch_size, length, world * batch_size)
    return [list(range(start, min(start + batch_size, length))) for start in starts]


class _Items(torch.utils.data.Dataset):
    """A dataset's items as ``(position, input tensor, label, digest)``, hashed where they are loaded (in a worker,
    with ``num_workers > 0``) when a digest function is given."""

    def __init__(self, dataset: Any, digest: Callable[[int, Any], bytes] | None) -> None:
        self.dataset = dataset
        self.digest = digest

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, Any, bytes]:
        item = self.dataset[index]
        digest = self.digest(index, item) if self.digest is not None else b""
        x, y = split_sample(item)
        return index, torch.as_tensor(x), y, digest


def _collate(items: list[tuple[int, torch.Tensor, Any, bytes]]) -> Batch:
    ids = torch.tensor([item[0] for item in items], dtype=torch.int64)
    inputs = torch.stack([item[1] for item in items])
    labels = None if any(item[2] is None for item in items) else [label_list(item[2]) for item in items]
    digests = tuple(item[3] for item in items) if items and items[0][3] else ()
    return Batch(ids, inputs, labels, digests)


def load_batches(
    dataset: Any,
    batches: Sequence[list[int]],
    num_workers: int = 0,
    digest: Callable[[int, Any], bytes] | None = None,
) -> Iterator[Batch]:
    """Load the given batches of a map-style dataset in order, with ``num_workers`` DataLoader workers; with
    ``digest``, each sample is also hashed as ``digest(position, item)`` where it is loaded."""
    loader = torch.utils.data.DataLoader(
        _Items(dataset, digest), batch_sampler=list(batches), num_workers=num_workers, collate_fn=_collate
    )
    yield from loader


def batches(data: Any, batch_size: int, device: torch.device | None = None) -> Iterator[Batch]:
    """(Unwrapped) ``data`` in batches of consecutive samples, in the data's own order, inputs on ``device``."""
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            inputs = data[start : start + batch_size]
            ids = torch.arange(start, start + inputs.shape[0])
            yield Batch(ids, inputs.to(device) if device is not None else inputs, None)
        return
    for batch in load_batches(data, fixed_batches(len(data), batch_size)):
        yield batch if device is None else Batch(batch.ids, batch.inputs.to(device), batch.labels, batch.digests)


def load_samples(data: Any, ids: Sequence[int]) -> tuple[torch.Tensor, list[Any]]:
    """The samples at positions ``ids`` of ``data`` (a tensor, dataset or DataLoader): their inputs stacked, and
    their raw labels (``None`` where an item has none)."""
    data = as_data(data)
    if isinstance(data, torch.Tensor):
        return data[list(ids)], [None] * len(ids)
    inputs, labels = [], []
    for i in ids:
        x, y = split_sample(data[i])
        inputs.append(torch.as_tensor(x))
        labels.append(y)
    return torch.stack(inputs), labels


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the CPU for a model without any): where its inputs must go."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def check_targets(targets: Targets, data: Any) -> Literal["label", "prediction"] | list[int]:
    """``targets`` for (unwrapped, non-empty) ``data`` resolved to ``"label"``, ``"prediction"`` or one int per
    sample, with a clear error for what cannot work (no samples, labels asked of unlabelled data, a wrong count)."""
    n = sample_count(data)
    if isinstance(targets, str):
        if targets == "auto":
            return "label" if has_labels(data) else "prediction"
        if targets == "label":
            if not has_labels(data):
                raise InputError(
                    "targets='label' needs labelled data: a dataset of (input, label) items; got "
                    f"{'a tensor of inputs' if isinstance(data, torch.Tensor) else 'items without labels'}. "
                    "Pass targets='prediction' or one target per sample."
                )
            return "label"
        if targets == "prediction":
            return "prediction"
        raise ValueError(f"targets must be 'auto', 'label', 'prediction' or one int per sample, got {targets!r}")
    values = targets.tolist() if isinstance(targets, torch.Tensor) else list(targets)
    if len(values) != n or any(isinstance(v, bool | float) or not hasattr(v, "__index__") for v in values):
        raise InputError(
            f"targets must give one output unit (int) per sample: the data has {n} samples, got {len(values)} "
            "values" + ("" if len(values) != n else " that are not all ints")
        )
    return [int(v) for v in values]


def batch_targets(
    targets: Literal["label", "prediction"] | list[int], batch: Batch, output: torch.Tensor, what: str
) -> list[int]:
    """One target per sample of ``batch`` (model ``output`` ``(N, outputs, ...)``), from :func:`check_targets`'s
    result; ``what`` names the caller in the error for multi-label samples (e.g. ``"an atlas"``)."""
    n = batch.inputs.shape[0]
    if isinstance(targets, list):
        return targets[batch.start : batch.start + n]  # checked against the model's outputs where relevance starts
    if targets == "label":
        if batch.labels is None:
            raise InputError("targets='label' but a batch's items carry no labels; pass targets='prediction'")
        if any(len(label) != 1 for label in batch.labels):
            raise InputError(
                f"a sample has several labels (multi-label data); {what} starts each sample's relevance from one "
                "target. Pass targets='prediction' or one target per sample."
            )
        return [label[0] for label in batch.labels]
    return predicted(output)
