"""The attributions a part graph is made of, batched over images: the targets, a layer's relevance maps under the
parts above it, and the conditional heatmaps of channel groups with the relevance they pass to the layer below.

Every pass conditions on a ``path``: for each chosen layer above, the channels of one part node, the node's ancestry
in the graph. Relevance then reaches a layer only through that chain of parts (CRP with ``sole_path``), which is what
makes the graph top-down: a lower part is a part *of* its parent part, found where the parent's relevance goes. One
pass per (node, image) gives the node's heatmap, its relevance at its own layer (recorded in the same pass: the
relevance arriving there depends only on the path above) and the maps its children are found in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor
from ..attribution.targets import Target, resolve_targets
from ..errors import InputError
from .peaks import heatmap_peaks

__all__ = ["ROW_BUDGET", "GroupPass", "Path", "batches", "check_maps", "group_pass", "layer_relevance", "targets_of"]

ROW_BUDGET = 1 << 19
"""Input elements in one batched attribution when no batch size is given: 3 rows of 224 x 224 RGB (an LRP row
of MobileNetV2 holds about 0.7 GB), 42 of 64 x 64."""

Path = Mapping[str, Sequence[int]]
"""The parts a relevance flows through on its way down: for each chosen layer above, the channels of one node."""


def batches(data: torch.Tensor, batch_size: int | None) -> list[range]:
    """Consecutive image ranges of ``batch_size`` (default: as many as :data:`ROW_BUDGET` allows)."""
    rows = batch_size or max(1, ROW_BUDGET // max(1, data[0].numel()))
    return [range(begin, min(len(data), begin + rows)) for begin in range(0, len(data), rows)]


def targets_of(attributor: Attributor, data: torch.Tensor, targets: Target, batch_size: int | None) -> list[int]:
    """One explained output per image: ``targets`` as given, or each image's prediction."""
    outputs = []
    with attributor.attached([]) as start:
        for part in batches(data, batch_size):
            outputs.append(start(data[part], heatmap=False, input_grad=False).output.detach())
    return resolve_targets(targets, torch.cat(outputs))


def _condition(targets: list[int], path: Path, layer: str | None = None, group: Sequence[int] = ()) -> Condition:
    layers: dict[str, tuple[int, ...] | PerSample] = {name: tuple(ids) for name, ids in path.items()}
    if layer is not None:
        layers[layer] = tuple(group)
    return Condition(targets=PerSample([[t] for t in targets]), layers=layers)


def layer_relevance(
    attributor: Attributor,
    data: torch.Tensor,
    targets: list[int],
    layer: str,
    path: Path,
    batch_size: int | None = None,
) -> torch.Tensor:
    """``(N, C, h, w)`` relevance arriving at ``layer``'s output through the parts of ``path``."""
    maps = []
    with attributor.attached([layer, *path]) as start:
        for part in batches(data, batch_size):
            run = start(data[part], record=[layer], heatmap=False, input_grad=False)
            result = run.attribute(_condition([targets[i] for i in part], path))
            maps.append(result.relevances[layer].detach().float())
            check_maps(layer, tuple(maps[-1].shape[1:]))
            del run, result  # before the next batch's forward pass: one run's activations alive at a time
    return torch.cat(maps)


@dataclass(frozen=True)
class GroupPass:
    """What one conditional pass per (image, group) gives.

    Attributes
    ----------
    positions
        ``(N, G, 2)``: the peak of each group's blurred conditional heatmap, in input pixels.
    scores
        ``(N, G)``: each group's relevance at its layer (summed over its channels and space), under its path.
    totals
        ``(N, G)``: the layer's whole relevance (absolute, all channels) under each group's path: what a group's
        share is taken of.
    below
        ``(N, G, C', h', w')``: the relevance each group passes to the layer below, or ``None`` without one.
    heatmaps
        Group index to the heatmap ``(H, W)`` on the image asked for in ``keep``.
    channels
        The number of channels of the layer.
    all_heatmaps
        ``(N, G, H, W)``: every heatmap, when asked for; else ``None``.
    """

    positions: torch.Tensor
    scores: torch.Tensor
    totals: torch.Tensor
    below: torch.Tensor | None
    heatmaps: dict[int, torch.Tensor]
    channels: int
    all_heatmaps: torch.Tensor | None = None


def check_maps(layer: str, shape: tuple[int, ...]) -> None:
    """``shape``: one image's maps at ``layer`` (channel ids the engine checks itself)."""
    if len(shape) != 3:
        raise InputError(
            f"layer {layer!r} gives {shape} maps; parts need (C, h, w) maps: choose convolutional layers before the "
            "model flattens its maps"
        )


def group_pass(
    attributor: Attributor,
    data: torch.Tensor,
    targets: list[int],
    layer: str,
    groups: Sequence[Sequence[int]],
    paths: Sequence[Path],
    *,
    sigma: float,
    below: str | None = None,
    keep: Mapping[int, int] | None = None,
    batch_size: int | None = None,
    all_heatmaps: bool = False,
    progress: object = None,
) -> GroupPass:
    """The conditional heatmap of every group on every image (group ``k`` under ``paths[k]``), its peak, its
    relevance at ``layer`` and the relevance it passes to ``below``; ``keep`` maps a group to the image whose heatmap
    is returned. ``progress`` is a bar to advance by one per image batch; ``all_heatmaps`` keeps every heatmap."""
    n, g = len(data), len(groups)
    keep = dict(keep or {})
    positions, scores, totals = torch.zeros(n, g, 2), torch.zeros(n, g), torch.zeros(n, g)
    arrived: torch.Tensor | None = None
    channels = 0
    kept: dict[int, torch.Tensor] = {}
    every = torch.zeros(n, g, *data.shape[-2:]) if all_heatmaps else None
    rows = batch_size or max(1, ROW_BUDGET // max(1, data[0].numel()))
    record = [layer, *([below] if below is not None else [])]
    above = list(dict.fromkeys(name for path in paths for name in path))
    with attributor.attached([layer, *above, *record]) as start:
        for part in batches(data, batch_size):
            images = list(part)
            rows_of = slice(images[0], images[-1] + 1)
            run = start(data[part], record=record, heatmap=True)
            chunk = max(1, rows // len(images))
            for first in range(0, g, chunk):
                members = range(first, min(g, first + chunk))
                columns = slice(first, first + len(members))
                picked = [targets[i] for i in images]
                result = run.attribute([_condition(picked, paths[k], layer, groups[k]) for k in members])
                assert result.heatmap is not None
                heat = result.grid(result.heatmap.detach().float())  # (b, m, H, W)
                positions[rows_of, columns] = heatmap_peaks(heat.flatten(0, 1), sigma).view(len(images), -1, 2)
                arriving_here = result.grid(result.relevances[layer].detach().float())  # (b, m, C, h, w)
                if first == 0 and images[0] == 0:
                    check_maps(layer, tuple(arriving_here.shape[2:]))
                at_layer = arriving_here.flatten(3).sum(3)  # (b, m, C)
                channels = at_layer.shape[2]
                for j, k in enumerate(members):
                    scores[rows_of, k] = at_layer[:, j, list(groups[k])].sum(1)
                totals[rows_of, columns] = at_layer.abs().sum(2)
                if every is not None:
                    every[rows_of, columns] = heat
                for k in members:
                    if keep.get(k) in images:
                        kept[k] = heat[images.index(keep[k]), k - first].clone()
                if below is not None:
                    arriving = result.grid(result.relevances[below].detach().float())  # (b, m, C', h', w')
                    if arrived is None:
                        arrived = torch.zeros(n, g, *arriving.shape[2:])
                    arrived[rows_of, columns] = arriving
            del run, result  # before the next batch's forward pass: one run's activations alive at a time
            if progress is not None:
                progress.update(1)  # type: ignore[attr-defined]
    return GroupPass(positions, scores, totals, arrived, kept, channels, every)
