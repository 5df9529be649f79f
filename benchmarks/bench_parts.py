"""Location instability of glocal's part nodes against raw channels and random channel groups (issue 13).

What is measured
----------------
Zhang et al.'s location instability (:mod:`glocal.parts.instability`: the spread of the distance between a unit's
inferred position and each annotated landmark over its top 20 images, divided by the image diagonal, averaged over
landmarks and over the top ``M`` units of a layer; lower is better). Per layer, ``M`` is the number of part nodes
the graph found there, and every method is scored on ``M`` units; those located by relevance are conditioned like
node ``j`` (on its chain of parent nodes, :meth:`~glocal.parts.PartGraph.path`):

nodes            the part graph's nodes (:func:`glocal.parts.part_graph`, defaults but ``max_nodes=8``): position =
                 the blurred peak of the group's conditional heatmap, score = the group's relevance.
channels         raw single channels, Zhang et al.'s baseline: position = the argmax of the channel's activation map
                 through the receptive-field centre, score = that maximum activation; the top ``M`` of all channels.
relevant         the node without its grouping: node ``j``'s most relevant member channel alone, by the blurred peak
                 of its own conditional heatmap (a one-channel node is its own member).
random           node ``j``'s size of channels drawn at random from all the layer's channels (``--draws`` draws,
                 mean), located like node ``j``.
oracle           the metric's floor on the same images: units placed exactly on each landmark in turn.

Cases
-----
synthetic  the part CNN of ``part_model.py`` trained here (seed 0; held-out accuracy and training time reported) on
           the objects of ``part_shapes.py``; per class (4), ``--images`` images of that class (a seed of their
           own), its three true part centres as landmarks, layers conv5, conv4, conv3, target the class.
photos     the real MobileNetV2 (ImageNet weights, ``composite="auto"``) on ``--views`` views of two real photos
           (``part_views.py``: chelsea the cat, astronaut) with hand-annotated landmarks, layers features.13,
           features.6; target: the class most views are predicted as. Also the chain of issue 13: for each landmark,
           the top-layer node nearest it (:meth:`PartGraph.nearest`) and its chain down the layers
           (:meth:`PartGraph.chain`), with, per chain node, its channels, the fraction of views it is present in
           and the fraction in which it is also within 0.1 of the diagonal of the landmark.

One JSON line per (case, class or photo), then one summary line per case: per layer the mean over classes or photos
of each method's instability and the ratio nodes / channels. Times are wall-clock seconds with ``--threads``.

Usage::

    .venv/bin/python benchmarks/bench_parts.py --threads 2 --json-out benchmarks/results-parts.jsonl
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from common import Arguments, emit_rows, log
from glocal import Attributor
from glocal.errors import InputError
from glocal.parts import (
    PartGraph,
    channel_positions,
    layer_instability,
    locate_groups,
    part_graph,
    receptive_field,
)
from part_model import train_part_cnn
from part_shapes import CLASSES, PARTS, part_images
from part_views import photo_views

CASES = ("synthetic", "photos")
SYNTHETIC_LAYERS = ("conv5", "conv4", "conv3")
PHOTO_LAYERS = ("features.13", "features.6")
PHOTOS = ("chelsea", "astronaut")
METHODS = ("nodes", "channels", "relevant", "random", "oracle")
MAX_NODES = 8
NEAR = 0.1
"""A chain node carries its landmark in a view when its position is within this fraction of the diagonal."""


def _located(
    attributor: Attributor, data: torch.Tensor, graph: PartGraph, layer: str, groups: list[list[int]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``groups[j]`` located under the path of the layer's node ``j`` (its chain of parents), as units."""
    paths = [graph.path(node.id) for node in graph.layer_nodes(layer)]
    found = locate_groups(attributor, data, layer, groups, targets=list(graph.targets), paths=paths)
    return [(found.positions[:, k].double(), found.scores[:, k].double()) for k in range(len(groups))]


def _strongest_members(
    attributor: Attributor, graph: PartGraph, data: torch.Tensor, layer: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per node of ``layer``, its most relevant member channel (mean over the images) located alone under the
    node's path: the node without its grouping. A one-channel node is its own member."""
    nodes = graph.layer_nodes(layer)
    members = [(j, c) for j, node in enumerate(nodes) if len(node.channels) > 1 for c in node.channels]
    units = graph.units(layer)
    if members:
        paths = [graph.path(nodes[j].id) for j, _ in members]
        found = locate_groups(
            attributor, data, layer, [[c] for _, c in members], targets=list(graph.targets), paths=paths
        )
        for j in {j for j, _ in members}:
            mine = [k for k, (owner, _) in enumerate(members) if owner == j]
            best = max(mine, key=lambda k: float(found.scores[:, k].mean()))
            units[j] = (found.positions[:, best].double(), found.scores[:, best].double())
    return units


def oracle(landmarks: torch.Tensor, diagonal: float) -> float:
    """The floor of the metric on these images: units sitting exactly on each landmark in turn (scored 1 where it is
    visible), averaged over the landmarks. Not 0: a perfect detector of one part still moves against the others as
    the object's scale, pose and flip change."""
    units = []
    for index in range(landmarks.shape[1]):
        points = landmarks[:, index].double()
        visible = ~points.isnan().any(1)
        units.append((points.nan_to_num(0.0), visible.double()))
    return layer_instability(units, landmarks, diagonal).instability


def layer_row(
    attributor: Attributor,
    graph: PartGraph,
    data: torch.Tensor,
    landmarks: torch.Tensor,
    layer: str,
    draws: int,
    seed: int,
) -> dict[str, Any]:
    """One layer's instabilities: nodes, raw channels, relevant single channels, random groups."""
    nodes = graph.layer_nodes(layer)
    sizes = [len(node.channels) for node in nodes]
    row: dict[str, Any] = {"layer": layer, "nodes": len(nodes), "sizes": sizes}
    if not nodes:
        return row
    top, diagonal = len(nodes), graph.diagonal
    start = time.perf_counter()
    row["nodes_instability"] = layer_instability(graph.units(layer), landmarks, diagonal).instability

    field = receptive_field(attributor.model, layer, data[:1])
    positions, scores = channel_positions(attributor.model, data, layer, field=field)
    channels = positions.shape[1]
    units = [(positions[:, c].double(), scores[:, c].double()) for c in range(channels)]
    row["channels_instability"] = layer_instability(units, landmarks, diagonal, top=top).instability

    units = _strongest_members(attributor, graph, data, layer)
    row["relevant_instability"] = layer_instability(units, landmarks, diagonal).instability

    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(draws):
        groups = [torch.randperm(channels, generator=generator)[:size].tolist() for size in sizes]
        values.append(layer_instability(_located(attributor, data, graph, layer, groups), landmarks, diagonal))
    row["random_instability"] = statistics.fmean(v.instability for v in values if not math.isnan(v.instability))
    row["random_draws"] = [round(v.instability, 5) for v in values]
    row["oracle_instability"] = oracle(landmarks, diagonal)
    row["ratio_nodes_channels"] = row["nodes_instability"] / row["channels_instability"]
    row["baseline_seconds"] = round(time.perf_counter() - start, 2)
    return row


def graph_row(
    attributor: Attributor,
    data: torch.Tensor,
    landmarks: torch.Tensor,
    layers: tuple[str, ...],
    target: int,
    draws: int,
    seed: int,
) -> tuple[dict[str, Any], PartGraph]:
    start = time.perf_counter()
    graph = part_graph(attributor, data, layers, targets=target, max_nodes=MAX_NODES, progress=False)
    seconds = time.perf_counter() - start
    rows = [layer_row(attributor, graph, data, landmarks, layer, draws, seed) for layer in layers]
    for row in rows:
        values = " ".join(f"{m} {row.get(m + '_instability', math.nan):.4f}" for m in METHODS)
        log(f"  {row['layer']}: {row['nodes']} nodes {row['sizes']}; instability {values}")
    return {"images": len(data), "target": target, "build_seconds": round(seconds, 2), "layers": rows}, graph


def summary(case: str, rows: list[dict[str, Any]], layers: tuple[str, ...]) -> dict[str, Any]:
    """Per layer, the mean over classes or photos of each method's instability (rows without nodes left out)."""
    out: dict[str, Any] = {"case": f"{case}-summary", "layers": {}}
    for layer in layers:
        found = [entry for row in rows for entry in row["layers"] if entry["layer"] == layer and entry["nodes"]]
        out["layers"][layer] = {
            method: round(statistics.fmean(entry[f"{method}_instability"] for entry in found), 5) for method in METHODS
        } | {"graphs": len(found)}
    means = {
        method: statistics.fmean(entry[method] for entry in out["layers"].values() if entry["graphs"])
        for method in METHODS
    }
    out["model"] = {method: round(value, 5) for method, value in means.items()}
    out["ratio_nodes_channels"] = round(means["nodes"] / means["channels"], 3)
    out["build_seconds_median"] = statistics.median(row["build_seconds"] for row in rows)
    return out


def synthetic(args: Any) -> list[dict[str, Any]]:
    trained = train_part_cnn(seed=0, threads=max(args.threads or 2, 1))
    log(f"part CNN: {100 * trained.accuracy:.1f} % held out, trained in {trained.seconds:.1f} s")
    attributor = Attributor(trained.model, "auto")
    images = part_images(len(CLASSES) * args.images, size=64, seed=3000)
    rows = []
    for label, parts in enumerate(CLASSES):
        chosen = images.labels == label
        columns = [PARTS.index(part) for part in parts]
        landmarks = images.centres[chosen][:, columns]
        log(f"class {label} ({', '.join(parts)}): {int(chosen.sum())} images")
        row, _ = graph_row(
            attributor, images.pictures[chosen], landmarks, SYNTHETIC_LAYERS, label, args.draws, seed=label
        )
        rows.append({"case": "synthetic", "class": label, "parts": list(parts)} | row)
    model_row = {
        "case": "synthetic-model",
        "accuracy": trained.accuracy,
        "train_seconds": round(trained.seconds, 1),
        "train_images": 4000,
    }
    return [model_row, *rows, summary("synthetic", rows, SYNTHETIC_LAYERS)]


def chain_rows(graph: PartGraph, landmarks: torch.Tensor, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """For each landmark, the top-layer node nearest it and its chain, with how often each chain node is present
    and near the landmark across the views."""
    out = []
    for index, name in enumerate(names):
        points = landmarks[:, index].double()
        try:
            top, distance = graph.nearest(graph.layers[0], points)
        except InputError as error:  # a landmark no node reaches is a result, not a failure
            out.append({"landmark": name, "error": str(error)})
            continue
        chain = []
        for node in graph.chain(top.id):
            positions = torch.tensor(node.positions, dtype=torch.float64)
            present = torch.tensor(node.present)
            visible = ~points.isnan().any(1)
            near = (positions - points).norm(dim=1) / graph.diagonal <= NEAR
            chain.append(
                {
                    "node": node.id,
                    "channels": list(node.channels),
                    "present": round(float(present.double().mean()), 3),
                    "present_and_near": round(float((present & near & visible).double().sum() / visible.sum()), 3),
                    "median_distance": round(
                        float((positions - points)[visible].norm(dim=1).median()) / graph.diagonal, 4
                    ),
                }
            )
        out.append({"landmark": name, "top_distance": round(distance, 4), "chain": chain})
    return out


def photos(args: Any) -> list[dict[str, Any]]:
    from glocal.demo import load_model, normalise

    model, labels = load_model()
    attributor = Attributor(model, "auto")
    rows = []
    for name in PHOTOS:
        views = photo_views(name, count=args.views, size=224, seed=0)
        data = normalise(views.pictures)
        with torch.no_grad():
            predicted = torch.cat([model(chunk).argmax(1) for chunk in data.split(16)])
        target, count = Counter(predicted.tolist()).most_common(1)[0]
        log(f"{name}: {len(data)} views, target {target} ({labels[target]}, predicted in {count})")
        row, graph = graph_row(attributor, data, views.landmarks, PHOTO_LAYERS, target, args.draws, seed=0)
        row = {"case": "photos", "photo": name, "label": labels[target], "predicted_as_target": count} | row
        row["chains"] = chain_rows(graph, views.landmarks, views.names)
        for chain in row["chains"]:
            log(f"  {chain['landmark']}: {chain.get('chain', chain.get('error'))}")
        rows.append(row)
        if args.figures:
            _figures(Path(args.figures), name, graph, views.pictures)
    return [*rows, summary("photos", rows, PHOTO_LAYERS)]


def _figures(folder: Path, name: str, graph: PartGraph, pictures: torch.Tensor) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    graph.figure(pictures, title=f"Part graph of MobileNetV2 on {len(pictures)} views of {name}").savefig(
        folder / f"parts-{name}-graph.png", dpi=100, bbox_inches="tight"
    )
    graph.to_json(folder / f"parts-{name}.json")


def main() -> None:
    parser = Arguments(
        __doc__, cases=CASES, threads=2, data_dir=False, quick="24 images per class, 6 views per photo, 1 draw"
    )
    parser.add_argument("--images", type=int, default=60, help="images per class, synthetic case (default 60)")
    parser.add_argument("--views", type=int, default=32, help="views per photo, photos case (default 32)")
    parser.add_argument("--draws", type=int, default=2, help="random group draws per layer (default 2)")
    parser.add_argument("--figures", default=None, help="write the photo graphs' pictures and JSON to this folder")
    args = parser.parse(at_least_one=("images", "views", "draws"))
    if args.quick:
        args.images, args.views, args.draws = min(args.images, 24), min(args.views, 6), 1
    emit_rows(args.threads, args.json_out, _lines(args))


def _lines(args: Any) -> Iterator[Callable[[], dict[str, Any]]]:
    """Each case's lines one by one, as the shared output wants them: a case runs when its first line is asked for
    (after the threads are set) and makes several lines."""
    runs = {"synthetic": synthetic, "photos": photos}
    for case in args.cases:
        for line in runs[case](args):
            yield lambda line=line: line


if __name__ == "__main__":
    main()
