"""Build an explanatory graph of object parts from CRP, top down (:func:`part_graph`).

Zhang et al. learn their explanatory graph with EM over Gaussian mixtures of activation peaks. Here the parts come
from relevance, one chosen layer at a time, starting nearest the output:

1. **Relevance maps.** At the top layer, the relevance arriving there for each image's target. Below, separately
   for every node of the layer above, the relevance that node passes down (conditioned on the node and its own
   parents: its *path*), so a lower part is found where its parent part's relevance goes: an edge detector that
   serves both the eye and the ear becomes a child of each, at each one's place (Zhang et al.'s graph, too, lets a
   filter hold several part patterns).
2. **Candidates.** A channel is *present* in an image when its share of the relevance in the maps there is at least
   ``threshold / C`` (``C`` channels; the default 1.0 is a fair share), and, below the top, the parent is present.
   Channels present in at least ``min_support`` of the images are candidates; the ``max_channels`` most relevant of
   them are kept.
3. **Positions of channels.** Per image, the peak of the candidate's relevance map, mapped to input pixels through
   the layer's receptive-field centres (:func:`~glocal.parts.receptive.receptive_field`): where the channel's
   conditional relevance is, at the layer's own resolution (its input heatmap redistributes that same relevance,
   but costs a backward pass per channel and image).
4. **Grouping.** Candidates that are present together and point at the same place (median distance at most
   ``radius`` of the image diagonal) are merged by average linkage (:mod:`~glocal.parts.grouping`); each group is a
   part node. At most ``max_nodes`` nodes are kept per layer, taken in turn from each parent's strongest children
   so that every part above keeps its own parts.
5. **Node positions, heatmaps and edges.** For every node and image, the group's conditional heatmap under its
   path: its blurred peak (:mod:`~glocal.parts.peaks`, Gaussian of ``smoothing`` times the diagonal) is the node's
   position; the same pass records the relevance the node passes to the next chosen layer, in which its children
   are found. The edge from a parent to a child carries the relevance the parent passes to the child's channels,
   summed over the images.
6. **Regrouping.** Nodes of one parent whose heatmap peaks fall together across the images (the same rule as step
   4) are one part after all and are merged: their heatmaps, scores and what they pass down add up (LRP is linear in
   the relevance it passes). At deep layers a cell sees most of the image (267 px at MobileNetV2 features.13), so
   the peak of a channel's relevance map can lie far from where its heatmap puts the part: on 32 cat views three
   groups of features.13 found the cat's left eye by their heatmaps (0.015-0.075 of the diagonal) while one of
   their maps peaked 0.21 away.

A node's score in an image is its channels' relevance there (under its path); it is present where that is at least
``threshold / C`` of the relevance its parent passes to the layer (of the layer's relevance, at the top) and its
parent is present.

Why these defaults: a fair share keeps the channels that matter in an image without tuning per layer width (twice
a fair share left 2 of MobileNetV2 features.13's 96 channels on 24 cat views: relevance there is spread thinly); a
part must show in a quarter of the images to be a part of the set rather than of one image; 0.1 of the diagonal is
about the size of an eye or a wheel in a tightly cropped object, and more than the receptive-field quantisation of
the deep layers (a 14 x 14 map of a 224 image: 16 pixels, 0.05 of the diagonal); the blur of 0.02 of the diagonal
(6 pixels at 224) makes a heatmap's peak its densest relevance rather than one pixel on an edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..attribution.engine import Attributor
from ..attribution.inputs import check_gradients_enabled, check_input
from ..attribution.layers import resolve_layers
from ..attribution.targets import Target
from ..errors import InputError
from ..progress import progress_bar
from .graph import PartEdge, PartGraph, PartNode, image_diagonal
from .grouping import average_linkage, colocation_distances
from .passes import GroupPass, batches, check_maps, group_pass, layer_relevance, targets_of
from .peaks import heatmap_peaks
from .receptive import ReceptiveField, receptive_field

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
    height, width = data.shape[-2:]
    diagonal = image_diagonal((height, width))
    explained = targets_of(attributor, data, targets, batch_size)
    rule = _Rule(threshold, min_support, radius, max_channels, diagonal)
    nodes: list[PartNode] = []
    edges: list[PartEdge] = []
    above: list[PartNode] = []
    paths: list[dict[str, list[int]]] = []
    arrived: torch.Tensor | None = None  # (N, nodes above, C, h, w): what each node above passes to this layer
    steps = len(layers) * (1 + len(batches(data, batch_size)))
    with progress_bar(steps, "part graph", enabled=progress, unit="step") as bar:
        for depth, layer in enumerate(layers):
            found = _candidates(
                attributor, data, explained, layer, depth == 0, above, arrived, rule, max_nodes, batch_size
            )
            bar.update(1)
            if not found:
                above, paths, arrived = [], [], None
                continue
            found_paths = [
                {} if f.parent is None else {**paths[f.parent], above[f.parent].layer: list(above[f.parent].channels)}
                for f in found
            ]
            result = group_pass(
                attributor,
                data,
                explained,
                layer,
                [f.channels for f in found],
                found_paths,
                sigma=smoothing * diagonal,
                below=layers[depth + 1] if depth + 1 < len(layers) else None,
                batch_size=batch_size,
                all_heatmaps=True,
                progress=bar,
            )
            found, found_paths, made, below = _merged(
                layer, found, found_paths, above, result, rule, smoothing, heatmaps
            )
            if arrived is not None:
                edges += [
                    _edge(above[f.parent], node, arrived[:, f.parent])
                    for f, node in zip(found, made, strict=True)
                    if f.parent is not None
                ]
            nodes += made
            above, paths, arrived = made, found_paths, below
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
            "images": len(data),
        },
    )


def _candidates(
    attributor: Attributor,
    data: torch.Tensor,
    explained: list[int],
    layer: str,
    top: bool,
    above: list[PartNode],
    arrived: torch.Tensor | None,
    rule: _Rule,
    most: int,
    batch_size: int | None,
) -> list[_Found]:
    """The layer's nodes before their passes: in the whole relevance at the ``top``, else in what each node
    ``above`` passes down (``arrived``); none below a layer without nodes."""
    if top:
        maps = layer_relevance(attributor, data, explained, layer, {}, batch_size)
        field = receptive_field(attributor.model, layer, data[:1])
        return sorted(_found(maps, None, None, field, rule), key=_strength)[:most]
    if not above or arrived is None:
        return []
    check_maps(layer, tuple(arrived.shape[2:]))
    field = receptive_field(attributor.model, layer, data[:1])
    per_parent = [_found(arrived[:, k], k, torch.tensor(p.present), field, rule) for k, p in enumerate(above)]
    return _in_turn(per_parent, most)


def _merged(
    layer: str,
    found: list[_Found],
    paths: list[dict[str, list[int]]],
    above: list[PartNode],
    result: GroupPass,
    rule: _Rule,
    smoothing: float,
    heatmaps: bool,
) -> tuple[list[_Found], list[dict[str, list[int]]], list[PartNode], torch.Tensor | None]:
    """The layer's nodes after regrouping by heatmap peaks (step 6): what was found, the paths, the nodes, and
    what each passes to the layer below (``(N, nodes, C', h', w')``, its members' summed), in the same order."""
    assert result.all_heatmaps is not None
    clusters = _regroup(found, result.positions, rule)
    found = [_union([found[k] for k in cluster]) for cluster in clusters]
    paths = [paths[cluster[0]] for cluster in clusters]
    sigma = smoothing * rule.diagonal
    made = []
    for k, (f, cluster) in enumerate(zip(found, clusters, strict=True)):
        heat = result.all_heatmaps[:, cluster].sum(1)  # (N, H, W): LRP is linear in the relevance it passes
        made.append(
            PartNode(
                id=f"{layer}:{k}",
                layer=layer,
                channels=tuple(f.channels),
                scores=tuple(float(s) for s in f.score),
                positions=tuple((float(r), float(c)) for r, c in heatmap_peaks(heat, sigma)),
                present=tuple(bool(p) for p in f.present),
                heatmap=heat[int(f.score.argmax())].clone() if heatmaps else None,
                parent=None if f.parent is None else above[f.parent].id,
            )
        )
    below = None if result.below is None else torch.stack([result.below[:, c].sum(1) for c in clusters], 1)
    return found, paths, made, below


@dataclass(frozen=True)
class _Rule:
    """The settings that decide a layer's nodes."""

    threshold: float
    min_support: float
    radius: float
    max_channels: int
    diagonal: float


@dataclass(frozen=True)
class _Found:
    """A node found in a layer's maps, before its pass: its channels, its score (N,) and presence (N,) there, and
    the index of the node above whose relevance it was found in (``None`` at the top)."""

    channels: list[int]
    score: torch.Tensor
    present: torch.Tensor
    parent: int | None
    total: torch.Tensor
    bar: float
    within: torch.Tensor | None


def _strength(found: _Found) -> float:
    return -float(found.score.mean())


def _found(
    maps: torch.Tensor, parent: int | None, within: torch.Tensor | None, field: ReceptiveField, rule: _Rule
) -> list[_Found]:
    """The nodes in ``maps`` ``(N, C, h, w)`` (the relevance the node ``parent`` above passes down, or the whole
    layer's), counting only the images ``within`` (where the parent is present), most relevant first."""
    channels = maps.shape[1]
    relevance = maps.sum((-2, -1))  # (N, C)
    total = relevance.abs().sum(1, keepdim=True).clamp_min(1e-12)
    bar = rule.threshold / channels
    present = relevance / total >= bar
    if within is not None:
        present &= within[:, None]
    support = present.float().mean(0)
    order = relevance.mean(0).argsort(descending=True, stable=True)
    candidates = [int(c) for c in order if support[c] >= rule.min_support and support[c] > 0][: rule.max_channels]
    if not candidates:
        return []
    cells = maps[:, candidates].flatten(2).argmax(2)  # (N, K) the peak cell of each candidate's map
    width = maps.shape[-1]
    positions = field.centres(torch.stack([cells // width, cells % width], dim=-1).float())
    distances = colocation_distances(positions, present[:, candidates], rule.diagonal)
    found = []
    for group in average_linkage(distances, rule.radius):
        members = sorted(candidates[i] for i in group)
        score = relevance[:, members].sum(1)
        shown = score / total[:, 0] >= bar
        found.append(
            _Found(members, score, shown if within is None else shown & within, parent, total[:, 0], bar, within)
        )
    return sorted(found, key=_strength)


def _regroup(found: list[_Found], positions: torch.Tensor, rule: _Rule) -> list[list[int]]:
    """Nodes of one parent whose heatmap peaks (``positions`` ``(N, G, 2)``) fall together, grouped again by the same
    rule as the channels: the peak of a deep channel's relevance map can lie far from where its heatmap puts the
    part (a cell of MobileNetV2 features.13 sees 267 px), so two groups of one part can first look apart. Clusters
    of indices into ``found``, most relevant first."""
    clusters: list[list[int]] = []
    for parent in dict.fromkeys(f.parent for f in found):
        members = [k for k, f in enumerate(found) if f.parent == parent]
        present = torch.stack([found[k].present for k in members], 1)
        distances = colocation_distances(positions[:, members], present, rule.diagonal)
        clusters += [[members[i] for i in group] for group in average_linkage(distances, rule.radius)]
    return sorted(clusters, key=lambda cluster: -sum(float(found[k].score.mean()) for k in cluster))


def _union(parts: list[_Found]) -> _Found:
    """One node of several found under one parent (their channels are disjoint: one grouping of the candidates)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    score = torch.stack([part.score for part in parts]).sum(0)
    present = score / first.total >= first.bar
    if first.within is not None:
        present &= first.within
    channels = sorted(c for part in parts for c in part.channels)
    return _Found(channels, score, present, first.parent, first.total, first.bar, first.within)


def _in_turn(per_parent: list[list[_Found]], most: int) -> list[_Found]:
    """Up to ``most`` nodes, taken in turn from each parent's (the first child of every parent, then the second,
    ...), so that every parent part keeps its strongest children; ordered most relevant first."""
    chosen: list[_Found] = []
    for rank in range(max((len(found) for found in per_parent), default=0)):
        chosen += [found[rank] for found in per_parent if rank < len(found)]
    return sorted(chosen[:most], key=_strength)


def _edge(parent: PartNode, child: PartNode, arrived: torch.Tensor) -> PartEdge:
    """The relevance ``parent`` passes to ``child``'s channels (``arrived``: what it passes to the child's layer,
    ``(N, C, h, w)``), summed over images, and its share of the parent's relevance."""
    flow = float(arrived[:, list(child.channels)].sum())
    total = sum(parent.scores)
    return PartEdge(parent.id, child.id, flow, flow / total if total != 0 else 0.0)
