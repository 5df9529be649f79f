"""Build an explanatory graph of object parts from CRP, top down (:func:`part_graph`).

Zhang et al. learn their explanatory graph with EM over Gaussian mixtures of activation peaks. Here the parts come
from relevance, one chosen layer at a time, starting nearest the output:

1. **Relevance maps.** The relevance arriving at the layer for each image's target, flowing only through the part
   nodes already found in the layers above (the top layer: all of the model's relevance).
2. **Candidates.** A channel is *present* in an image when its share of the layer's relevance there is at least
   ``threshold / C`` (``C`` channels; the default 1.0 is a fair share). Channels present in at least
   ``min_support`` of the images are candidates; the ``max_channels`` most relevant of them are kept.
3. **Positions of channels.** Per image, the peak of the channel's relevance map at the layer, mapped to input pixels
   through the layer's receptive-field centres (:func:`~glocal.parts.receptive.receptive_field`): the place the
   channel's conditional relevance is, at the layer's own resolution (its input heatmap redistributes that same
   relevance, but costs a backward pass per channel and image).
4. **Grouping.** Candidates that are present together and point at the same place (median distance at most
   ``radius`` of the image diagonal) are merged by average linkage (:mod:`~glocal.parts.grouping`); each group is a
   part node. The ``max_nodes`` most relevant nodes are kept.
5. **Node positions, heatmaps and edges.** For every node and image, the group's conditional heatmap (the layer
   conditioned on the group, under the parts above): its blurred peak (:mod:`~glocal.parts.peaks`, Gaussian of
   ``smoothing`` times the diagonal) is the node's position; the same pass records the relevance the group passes to
   each channel of the next chosen layer, which gives the edges (summed over images) and the next layer's maps.

A node's score in an image is its channels' relevance there; it is present where that is at least ``threshold / C``
of the layer's relevance.

Why these defaults: a fair share keeps the channels that matter in an image without tuning per layer width (twice
a fair share left 2 of MobileNetV2 features.13's 96 channels on 24 cat views: relevance there is spread thinly); a
part must show in a quarter of the images to be a part of the set rather than of one image; 0.1 of the diagonal is
about the size of an eye or a wheel in a tightly cropped object, and more than the receptive-field quantisation of
the deep layers (a 14 x 14 map of a 224 image: 16 pixels, 0.05 of the diagonal); the blur of 0.02 of the diagonal
(6 pixels at 224) makes a heatmap's peak its densest relevance rather than one pixel on an edge.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..attribution.engine import Attributor
from ..attribution.inputs import check_gradients_enabled, check_input
from ..attribution.layers import resolve_layers
from ..attribution.targets import Target
from ..errors import InputError
from ..progress import progress_bar
from .graph import PartEdge, PartGraph, PartNode
from .grouping import average_linkage, colocation_distances
from .passes import batches, group_pass, layer_relevance, targets_of
from .receptive import receptive_field

__all__ = ["part_graph"]


def _check(layers: Sequence[str], threshold: float, min_support: float, radius: float, counts: dict[str, int]) -> None:
    if not threshold > 0:
        raise InputError(f"threshold must be > 0 (times a fair share 1/C of a layer's relevance), got {threshold}")
    if not 0 <= min_support <= 1:
        raise InputError(f"min_support must be a fraction of the images in [0, 1], got {min_support}")
    if not radius >= 0:
        raise InputError(f"radius must be >= 0 (a fraction of the image diagonal), got {radius}")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    if isinstance(layers, str) or len(layers) == 0:
        raise InputError(f"layers must be a list of layer names, top (nearest the output) first, got {layers!r}")
    if len(set(layers)) != len(layers):
        raise InputError(f"layers must be distinct, got {list(layers)}")


def _check_order(attributor: Attributor, data: torch.Tensor, layers: Sequence[str]) -> None:
    """Layers must come top first: conditioning on a layer below the one explained sends relevance back up through
    the wrong parts (shares above 1, not an error), so the forward order of one image decides."""
    with attributor.attached(layers) as start:
        order = start(data[:1], heatmap=False, input_grad=False).order
    top_first = sorted(layers, key=lambda name: -order[name])
    if top_first != list(layers):
        raise InputError(f"layers must be given nearest the output first, got {list(layers)}; pass layers={top_first}")


def part_graph(
    attributor: Attributor,
    data: torch.Tensor,
    layers: Sequence[str],
    *,
    targets: Target = None,
    threshold: float = 1.0,
    min_support: float = 0.25,
    radius: float = 0.1,
    max_channels: int = 32,
    max_nodes: int = 12,
    smoothing: float = 0.02,
    heatmaps: bool = True,
    batch_size: int | None = None,
    progress: bool = True,
) -> PartGraph:
    """An explanatory graph of the parts the model uses in ``data``, over ``layers`` (top first; see the module).

    Parameters
    ----------
    attributor
        The engine (model and LRP composite).
    data
        ``(N, C, H, W)`` images of one class or any set that shares parts.
    layers
        Convolutional layers, nearest the output first; each must give ``(N, C, h, w)`` maps.
    targets
        The output explained: one unit for all images, one per image, or ``None`` for each image's prediction.
    threshold, min_support, radius, max_channels, max_nodes, smoothing
        See the module: presence (times a fair share), candidate support (fraction of images), grouping radius and
        blur (fractions of the image diagonal), candidates and nodes kept per layer.
    heatmaps
        Keep each node's conditional heatmap on its best image (for drawing).
    batch_size
        Rows per batched attribution (default: a memory budget).
    progress
        Show a progress bar.

    Returns
    -------
    PartGraph
        Nodes per layer with per-image scores, positions and presence; edges between adjacent chosen layers.
    """
    check_gradients_enabled()
    data = check_input(data)
    if data.dim() != 4:
        raise InputError(f"data must be images (N, C, H, W), got shape {tuple(data.shape)}")
    layers = list(layers) if not isinstance(layers, str) else layers
    _check(layers, threshold, min_support, radius, {"max_channels": max_channels, "max_nodes": max_nodes})
    resolve_layers(attributor.model, layers)
    _check_order(attributor, data, layers)
    n, (height, width) = len(data), data.shape[-2:]
    diagonal = float(torch.tensor([height, width], dtype=torch.float64).norm())
    explained = targets_of(attributor, data, targets, batch_size)
    parent: dict[str, list[int]] = {}
    nodes: list[PartNode] = []
    edges: list[PartEdge] = []
    maps = None
    flows_above: torch.Tensor | None = None
    above: list[PartNode] = []
    steps = len(layers) * (1 + len(batches(data, batch_size)))
    with progress_bar(steps, "part graph", enabled=progress, unit="step") as bar:
        for depth, layer in enumerate(layers):
            if maps is None:
                maps = layer_relevance(attributor, data, explained, layer, parent, batch_size)
            if maps.dim() != 4:
                raise InputError(
                    f"layer {layer!r} gives {tuple(maps.shape[1:])} maps; part graphs need (C, h, w) maps: choose "
                    "convolutional layers before the model flattens its maps"
                )
            found = _nodes(attributor, data, layer, maps, threshold, min_support, radius, max_channels, max_nodes)
            bar.update(1)
            if flows_above is not None:
                edges += _edges(above, layer, found, flows_above)
            below = layers[depth + 1] if depth + 1 < len(layers) else None
            groups = [channels for channels, _, _ in found]
            scores = [score for _, score, _ in found]
            keep = {k: int(score.argmax()) for k, score in enumerate(scores)} if heatmaps else {}
            sigma = smoothing * diagonal
            result = group_pass(
                attributor,
                data,
                explained,
                layer,
                groups,
                parent,
                sigma=sigma,
                below=below,
                keep=keep,
                batch_size=batch_size,
                progress=bar,
            )
            above = [
                PartNode(
                    id=f"{layer}:{k}",
                    layer=layer,
                    channels=tuple(channels),
                    scores=tuple(float(s) for s in score),
                    positions=tuple((float(r), float(c)) for r, c in result.positions[:, k]),
                    present=tuple(bool(p) for p in present),
                    heatmap=result.heatmaps.get(k),
                )
                for k, (channels, score, present) in enumerate(found)
            ]
            nodes += above
            parent[layer] = sorted(c for channels in groups for c in channels)
            flows_above, maps = result.below, result.below_maps
    return PartGraph(
        layers=tuple(layers),
        nodes=tuple(nodes),
        edges=tuple(edges),
        targets=tuple(explained),
        image_size=(int(height), int(width)),
        settings={
            "threshold": threshold,
            "min_support": min_support,
            "radius": radius,
            "max_channels": max_channels,
            "max_nodes": max_nodes,
            "smoothing": smoothing,
            "images": n,
        },
    )


def _nodes(
    attributor: Attributor,
    data: torch.Tensor,
    layer: str,
    maps: torch.Tensor,
    threshold: float,
    min_support: float,
    radius: float,
    max_channels: int,
    max_nodes: int,
) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """The layer's part nodes as (channels, scores (N,), present (N,)), most relevant first."""
    channels = maps.shape[1]
    relevance = maps.sum((-2, -1))  # (N, C)
    total = relevance.abs().sum(1, keepdim=True).clamp_min(1e-12)
    bar = threshold / channels
    present = relevance / total >= bar
    support = present.float().mean(0)
    order = relevance.mean(0).argsort(descending=True, stable=True)
    candidates = [int(c) for c in order if support[c] >= min_support and support[c] > 0][:max_channels]
    if not candidates:
        return []
    field = receptive_field(attributor.model, layer, data[:1])
    chosen = maps[:, candidates]
    cells = chosen.flatten(2).argmax(2)  # (N, K) the peak cell of each candidate's map
    width = maps.shape[-1]
    positions = field.centres(torch.stack([cells // width, cells % width], dim=-1).float())
    diagonal = float(torch.tensor(data.shape[-2:], dtype=torch.float64).norm())
    distances = colocation_distances(positions, present[:, candidates], diagonal)
    groups = [[candidates[i] for i in group] for group in average_linkage(distances, radius)]
    found = []
    for group in groups:
        score = relevance[:, group].sum(1)
        found.append((sorted(group), score, score / total[:, 0] >= bar))
    found.sort(key=lambda item: -float(item[1].mean()))
    return found[:max_nodes]


def _edges(
    above: list[PartNode], layer: str, found: list[tuple[list[int], torch.Tensor, torch.Tensor]], flows: torch.Tensor
) -> list[PartEdge]:
    """Edges from the nodes ``above`` to the new nodes ``found``: the relevance each parent passes to the child's
    channels, summed over images, and its share of the parent's relevance."""
    edges = []
    for k, parent in enumerate(above):
        total = sum(parent.scores)
        for j, (channels, _, _) in enumerate(found):
            flow = float(flows[:, k, channels].sum())
            share = flow / total if total != 0 else 0.0
            if flow != 0:
                edges.append(PartEdge(parent.id, f"{layer}:{j}", flow, share))
    return edges
