"""Where relevance starts: the output unit of each sample, given as captum does (``None`` for the prediction, one int
for all samples, or one per sample).

>>> import torch
>>> output = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
>>> predicted(output)
[1, 0]
>>> resolve_targets(None, output), resolve_targets(2, output), resolve_targets([0, 1], output)
([1, 0], [2, 2], [0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import TargetError

__all__ = ["Target", "predicted", "resolve_targets"]

Target = int | Sequence[int] | torch.Tensor | None


def predicted(output: torch.Tensor) -> list[int]:
    """Each sample's predicted output unit: the argmax of ``(N, outputs)``, or of ``(N, outputs, ...)`` summed over
    the trailing dimensions (a segmentation model's class scores summed over pixels)."""
    scores = output.detach().flatten(2).sum(-1) if output.dim() > 2 else output.detach()
    return [int(v) for v in scores.argmax(1).tolist()]


def resolve_targets(target: Target, output: torch.Tensor) -> list[int]:
    """One output unit per sample of ``output`` ``(N, outputs, ...)``: ``None`` gives each sample's prediction, an int
    the same unit for all, a sequence or tensor one unit per sample; raises :class:`~glocal.TargetError` otherwise."""
    n, outputs = output.shape[0], output.shape[1]
    if target is None:
        return predicted(output)
    values: list[int]
    if isinstance(target, int) or (isinstance(target, torch.Tensor) and target.dim() == 0):
        values = [int(target)] * n
    else:
        values = [int(t) for t in (target.tolist() if isinstance(target, torch.Tensor) else target)]
        if len(values) != n:
            raise TargetError(f"got {len(values)} targets for {n} samples; give one int for all or one per sample")
    bad = [t for t in values if not 0 <= t < outputs]
    if bad:
        raise TargetError(f"targets {bad} are out of range: the model has {outputs} outputs (0 to {outputs - 1})")
    return values
