"""What ``glocal parts`` does once its arguments are parsed (imports torch; see :mod:`glocal.cli.parts`).

:func:`parts` returns ``(document, lines)`` like :mod:`glocal.cli.work`; files are staged and renamed into place only
when the work succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..attribution.engine import Attributor
from .loading import Loaded, check_layers, image_paths
from .output import Staging
from .work import Result, load_images, save_figure, slug

if TYPE_CHECKING:
    from ..parts.graph import PartGraph

__all__ = ["graph_lines", "parts"]


def parts(
    loaded: Loaded,
    composite: Any,
    description: str,
    sources: Sequence[Path],
    layers: Sequence[str],
    label: int | None,
    settings: Mapping[str, Any],
    out: Path | None,
    positions: int,
    progress: bool,
) -> Result:
    """The part graph of the images (:func:`glocal.parts.part_graph` with ``settings``); with ``out``, its JSON, its
    picture and the first ``positions`` images' part positions."""
    paths = image_paths(sources)
    chosen = check_layers(loaded, layers)
    from ..parts.build import part_graph

    pictures, inputs = load_images(loaded, paths)
    attributor = Attributor(loaded.model, composite)
    graph = part_graph(
        attributor, inputs, chosen, targets=label, heatmaps=out is not None, progress=progress, **settings
    )
    written: list[str] = []
    if out is not None:
        stems = [path.stem for path in paths]
        names = stems if len(set(stems)) == len(stems) else [f"{n}-{stem}" for n, stem in enumerate(stems)]
        with Staging() as staging:
            graph.to_json(staging.path(out / "part-graph.json"))
            save_figure(graph.figure(pictures), staging.path(out / "part-graph.png"))
            written += [str(out / "part-graph.json"), str(out / "part-graph.png")]
            for sample in range(min(positions, len(paths))):
                from ..viz.parts import part_positions_figure

                figure = part_positions_figure(
                    graph,
                    pictures[sample],
                    [node.positions[sample] for node in graph.nodes],
                    present=[node.present[sample] for node in graph.nodes],
                    title=f"{paths[sample].name}: where each part node finds its part (target {graph.targets[sample]})",
                )
                path = out / f"positions-{slug(names[sample])}.png"
                save_figure(figure, staging.path(path))
                written.append(str(path))
    document = {
        "model": loaded.name,
        "composite": description,
        "images": [str(path) for path in paths],
        "layers": chosen,
        "graph": graph.to_dict(),
        "written": written,
    }
    lines = graph_lines(graph) + [f"wrote {path}" for path in written]
    return document, lines


def graph_lines(graph: PartGraph) -> list[str]:
    """The graph as text: per layer, each node with its channels, support, mean score and strongest child."""
    targets = sorted(set(graph.targets))
    explained = f"class {targets[0]}" if len(targets) == 1 else f"classes {', '.join(map(str, targets))}"
    lines = [
        f"part graph of {len(graph.targets)} images ({explained} explained), layers top first; support: share of "
        "images where the part is present; part of: the node above whose relevance it was found in; strongest child: "
        "the part below that explains most of this part's relevance (its share)"
    ]
    for layer in graph.layers:
        nodes = graph.layer_nodes(layer)
        lines.append(f"{layer}: {len(nodes)} part node{'s' if len(nodes) != 1 else ''}")
        width = max((len(node.id) for node in nodes), default=0)
        wide = max((len(",".join(map(str, node.channels))) for node in nodes), default=0)
        for node in nodes:
            children = graph.children(node.id)
            strongest = f"strongest child {children[0][0].id} ({children[0][1].share:.0%})" if children else ""
            whole = f"part of {node.parent}  " if node.parent is not None else ""
            channels = ",".join(map(str, node.channels))
            lines.append(
                f"  {node.id:<{width}}  channels {channels:<{wide}}  support {node.support:>4.0%}  "
                f"mean score {node.mean_score:>9.4g}  {whole}{strongest}".rstrip()
            )
    return lines
