"""Find a part graph's parts in new images (:func:`locate_parts`), or any channel groups' parts (:func:`locate_groups`).

A node is located in an image the way the graph located it in its own images, in one conditional pass: the relevance
arriving at its layer through its chain of parent nodes (:meth:`~glocal.parts.PartGraph.path`) gives the node's
score (its channels' relevance) and presence (at least ``threshold / C`` of that relevance, and its parent present);
the peak of the group's blurred conditional heatmap under the same condition gives its position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..attribution.engine import Attributor
from ..attribution.inputs import check_gradients_enabled, check_input
from ..attribution.targets import Target
from ..errors import InputError
from ..progress import progress_bar
from .graph import PartGraph, image_diagonal
from .passes import Path, group_pass, targets_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PartLocations", "locate_groups", "locate_parts"]


@dataclass(frozen=True)
class PartLocations:
    """Where each part (a node or a channel group) is in each image.

    Attributes
    ----------
    node_ids
        The ``G`` parts located.
    positions
        ``(N, G, 2)`` ``(row, column)`` in input pixels: the peak of the part's blurred conditional heatmap.
    scores
        ``(N, G)``: the part's channels' relevance.
    present
        ``(N, G)``: whether the part's share of its layer's relevance passes the threshold.
    targets
        The output explained for each image.
    heatmaps
        ``(N, G, H, W)`` conditional heatmaps, when asked for; else ``None``.
    """

    node_ids: tuple[str, ...]
    positions: torch.Tensor
    scores: torch.Tensor
    present: torch.Tensor
    targets: tuple[int, ...]
    heatmaps: torch.Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """The locations as JSON-serialisable values (without heatmaps)."""
        return {
            "node_ids": list(self.node_ids),
            "positions": self.positions.tolist(),
            "scores": self.scores.tolist(),
            "present": self.present.tolist(),
            "targets": list(self.targets),
        }

    def figure(self, images: torch.Tensor, sample: int = 0, **options: Any) -> Figure:
        """The image ``sample`` with a marker at each part's position (hollow where the part is absent)."""
        from ..viz.parts import part_positions_figure

        return part_positions_figure(
            self.node_ids, images[sample], self.positions[sample], present=self.present[sample], **options
        )


def locate_groups(
    attributor: Attributor,
    data: torch.Tensor,
    layer: str,
    groups: Sequence[Sequence[int]],
    *,
    targets: Target = None,
    paths: Path | Sequence[Path] | None = None,
    threshold: float = 1.0,
    smoothing: float = 0.02,
    heatmaps: bool = False,
    batch_size: int | None = None,
    names: Sequence[str] | None = None,
) -> PartLocations:
    """Locate channel ``groups`` of ``layer`` in every image, with relevance flowing only through ``paths`` (layer
    to channels above ``layer``: one for all groups, or one per group; e.g. a graph node's
    :meth:`~glocal.parts.PartGraph.path`). ``names`` label the groups (default ``"layer:k"``)."""
    check_gradients_enabled()
    data = check_input(data)
    if data.dim() != 4:
        raise InputError(f"data must be images (N, C, H, W), got shape {tuple(data.shape)}")
    if not groups or any(len(group) == 0 for group in groups):
        raise InputError(f"groups must be non-empty lists of channels, got {groups!r}")
    explained = targets_of(attributor, data, targets, batch_size)
    names = list(names) if names is not None else [f"{layer}:{k}" for k in range(len(groups))]
    each = _paths(paths, len(groups))
    return _located(attributor, data, explained, layer, groups, each, names, threshold, smoothing, heatmaps, batch_size)


def _located(
    attributor: Attributor,
    data: torch.Tensor,
    explained: list[int],
    layer: str,
    groups: Sequence[Sequence[int]],
    paths: list[Path],
    names: list[str],
    threshold: float,
    smoothing: float,
    heatmaps: bool,
    batch_size: int | None,
) -> PartLocations:
    """:func:`locate_groups` once the targets are known (one forward pass over the images gives them)."""
    found = group_pass(
        attributor,
        data,
        explained,
        layer,
        [list(g) for g in groups],
        paths,
        sigma=smoothing * image_diagonal(data.shape[-2:]),
        batch_size=batch_size,
        all_heatmaps=heatmaps,
    )
    return PartLocations(
        node_ids=tuple(names),
        positions=found.positions,
        scores=found.scores,
        present=found.scores / found.totals.clamp_min(1e-12) >= threshold / found.channels,
        targets=tuple(explained),
        heatmaps=found.all_heatmaps,
    )


def _paths(paths: Path | Sequence[Path] | None, count: int) -> list[Path]:
    if paths is None or isinstance(paths, Mapping):
        return [dict(paths or {})] * count
    paths = list(paths)
    if len(paths) != count or not all(isinstance(path, Mapping) for path in paths):
        raise InputError(
            f"paths must be one mapping of layer to channels for all groups, or one per group ({count}), got {paths!r}"
        )
    return paths


def locate_parts(
    attributor: Attributor,
    graph: PartGraph,
    data: torch.Tensor,
    *,
    targets: Target = None,
    heatmaps: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> PartLocations:
    """Locate every node of ``graph`` in the images ``data`` (see the module), with the graph's own settings.

    ``targets``: the outputs to explain (default: each image's prediction). The result's parts are the graph's
    nodes in its order; a node is present only where its parent is.
    """
    data = check_input(data)
    if tuple(data.shape[-2:]) != tuple(graph.image_size):
        raise InputError(
            f"the graph was built on {graph.image_size[0]} x {graph.image_size[1]} images, got "
            f"{tuple(data.shape[-2:])}; resize the images to the graph's size"
        )
    if not graph.nodes:
        raise InputError("the graph has no nodes to locate")
    explained = targets_of(attributor, data, targets, batch_size)
    settings = graph.settings
    found = []
    present: dict[str, torch.Tensor] = {}
    with progress_bar(len(graph.layers), "locating parts", enabled=progress, unit="layer") as bar:
        for layer in graph.layers:
            nodes = graph.layer_nodes(layer)
            if nodes:
                located = _located(
                    attributor,
                    data,
                    explained,
                    layer,
                    [list(n.channels) for n in nodes],
                    [graph.path(n.id) for n in nodes],
                    [n.id for n in nodes],
                    float(settings.get("threshold", 1.0)),
                    float(settings.get("smoothing", 0.02)),
                    heatmaps,
                    batch_size,
                )
                for k, node in enumerate(nodes):
                    shown = located.present[:, k]
                    present[node.id] = shown if node.parent is None else shown & present[node.parent]
                found.append(located)
            bar.update(1)
    return PartLocations(
        node_ids=tuple(i for f in found for i in f.node_ids),
        positions=torch.cat([f.positions for f in found], dim=1),
        scores=torch.cat([f.scores for f in found], dim=1),
        present=torch.stack([present[i] for f in found for i in f.node_ids], dim=1),
        targets=tuple(explained),
        heatmaps=torch.cat([f.heatmaps for f in found], dim=1) if heatmaps else None,  # type: ignore[misc]
    )
