"""The attributions a part graph is made of, batched over images: the targets, a layer's relevance maps under the
parts above it, and the conditional heatmaps of channel groups with the relevance they pass to the layer below.

Every pass conditions on the ``parent``: for each chosen layer above, the channels of its part nodes. Relevance then
reaches a layer only through the parts above it (CRP with ``sole_path``), which is what makes the graph top-down: a
lower part is a part *of* the upper parts. Because LRP's rules are linear in the relevance they pass down, the
relevance under ``{..., layer: all nodes}`` is the sum of the relevances under ``{..., layer: node}`` over disjoint
nodes, so one pass per node serves both the node's heatmaps and the next layer's maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor
from ..attribution.targets import Target, resolve_targets
from .peaks import heatmap_peaks

__all__ = ["ROW_BUDGET", "GroupPass", "batches", "group_pass", "layer_relevance", "targets_of"]

ROW_BUDGET = 1 << 19
"""Input elements in one batched attribution when no batch size is given: 3 rows of 224 x 224 RGB (an LRP row
of MobileNetV2 holds about 0.7 GB), 42 of 64 x 64."""

Parent = Mapping[str, Sequence[int]]


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


def _condition(targets: list[int], parent: Parent, layer: str | None = None, group: Sequence[int] = ()) -> Condition:
    layers: dict[str, tuple[int, ...] | PerSample] = {name: tuple(ids) for name, ids in parent.items()}
    if layer is not None:
        layers[layer] = tuple(group)
    return Condition(targets=PerSample([[t] for t in targets]), layers=layers)


def layer_relevance(
    attributor: Attributor,
    data: torch.Tensor,
    targets: list[int],
    layer: str,
    parent: Parent,
    batch_size: int | None = None,
) -> torch.Tensor:
    """``(N, C, h, w)`` relevance arriving at ``layer``'s output through the ``parent`` parts."""
    maps = []
    with attributor.attached([layer, *parent]) as start:
        for part in batches(data, batch_size):
            run = start(data[part], record=[layer], heatmap=False, input_grad=False)
            result = run.attribute(_condition([targets[i] for i in part], parent))
            maps.append(result.relevances[layer].detach().float())
    return torch.cat(maps)


@dataclass(frozen=True)
class GroupPass:
    """What one conditional pass per (image, group) gives.

    Attributes
    ----------
    positions
        ``(N, G, 2)``: the peak of each group's blurred conditional heatmap, in input pixels.
    below
        ``(N, G, C')``: relevance each group passes to each channel of the layer below (summed over space), or
        ``None`` without a layer below.
    below_maps
        ``(N, C', h', w')``: the relevance at the layer below summed over the groups (the map the next layer's parts
        are found in), or ``None``.
    heatmaps
        Group index to the heatmap ``(H, W)`` on the image asked for in ``keep``.
    all_heatmaps
        ``(N, G, H, W)``: every heatmap, when asked for; else ``None``.
    """

    positions: torch.Tensor
    below: torch.Tensor | None
    below_maps: torch.Tensor | None
    heatmaps: dict[int, torch.Tensor]
    all_heatmaps: torch.Tensor | None = None


def group_pass(
    attributor: Attributor,
    data: torch.Tensor,
    targets: list[int],
    layer: str,
    groups: Sequence[Sequence[int]],
    parent: Parent,
    *,
    sigma: float,
    below: str | None = None,
    keep: Mapping[int, int] | None = None,
    batch_size: int | None = None,
    all_heatmaps: bool = False,
    progress: object = None,
) -> GroupPass:
    """The conditional heatmap of every group on every image (under ``parent``), its peak, and the relevance passed
    to ``below``; ``keep`` maps a group to the image whose heatmap is returned. ``progress`` is a bar to advance by
    one per image batch; ``all_heatmaps`` keeps every heatmap."""
    n, g = len(data), len(groups)
    keep = dict(keep or {})
    positions = torch.zeros(n, g, 2)
    flows: torch.Tensor | None = None
    maps: torch.Tensor | None = None
    kept: dict[int, torch.Tensor] = {}
    every = torch.zeros(n, g, *data.shape[-2:]) if all_heatmaps else None
    parts = batches(data, batch_size)
    rows = batch_size or max(1, ROW_BUDGET // max(1, data[0].numel()))
    record = [below] if below is not None else []
    with attributor.attached([layer, *parent, *record]) as start:
        for part in parts:
            images = list(part)
            run = start(data[part], record=record, heatmap=True)
            chunk = max(1, rows // len(images))
            for first in range(0, g, chunk):
                members = range(first, min(g, first + chunk))
                conditions = [_condition([targets[i] for i in images], parent, layer, groups[k]) for k in members]
                result = run.attribute(conditions)
                assert result.heatmap is not None
                heat = result.grid(result.heatmap.detach().float())  # (b, m, H, W)
                peaks = heatmap_peaks(heat.flatten(0, 1), sigma).view(len(images), len(members), 2)
                positions[images[0] : images[-1] + 1, first : first + len(members)] = peaks
                if every is not None:
                    every[images[0] : images[-1] + 1, first : first + len(members)] = heat
                for k in members:
                    if keep.get(k) in images:
                        kept[k] = heat[images.index(keep[k]), k - first].clone()
                if below is not None:
                    arriving = result.grid(result.relevances[below].detach().float())  # (b, m, C', h', w')
                    if flows is None or maps is None:
                        flows = torch.zeros(n, g, arriving.shape[2])
                        maps = torch.zeros(n, *arriving.shape[2:])
                    flows[images[0] : images[-1] + 1, first : first + len(members)] = arriving.sum((-2, -1))
                    maps[images[0] : images[-1] + 1] += arriving.sum(1)
            if progress is not None:
                progress.update(1)  # type: ignore[attr-defined]
    return GroupPass(positions, flows, maps, kept, every)
