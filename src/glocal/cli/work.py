"""What each ``glocal`` subcommand does, once its arguments are parsed (imports torch; see :mod:`glocal.cli.app`).

Each function returns ``(document, lines)``: the JSON document ``--json`` prints, and the lines printed otherwise.
Files are staged (:class:`~glocal.cli.output.Staging`) and renamed into place only when the work succeeded.

One idea kept whole: the bodies of the subcommands, each a short recipe over glocal's public functions, side by side
so that they load, report and write the same way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import torch

from ..attribution.engine import Attributor
from ..errors import GlocalError
from ..progress import progress_bar
from .loading import Loaded, check_layers, image_paths, load_data
from .output import Staging

__all__ = [
    "ReportOptions",
    "Result",
    "atlas",
    "demo",
    "explain",
    "graph",
    "load_images",
    "path",
    "refs",
    "report",
    "save_figure",
    "scan",
    "slug",
    "write_json",
]

logger = logging.getLogger("glocal.cli")

Result = tuple[dict[str, Any] | None, list[str]]
"""The JSON document (``None``: print nothing, e.g. on the other processes of a distributed scan) and the lines."""


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _class_name(loaded: Loaded, index: int) -> str:
    names = loaded.class_names
    return names[index] if names is not None and 0 <= index < len(names) else str(index)


def save_figure(figure: Any, path: Path, dpi: float = 100) -> None:
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, dpi=dpi, format="png")
    finally:
        plt.close(figure)


def load_images(loaded: Loaded, paths: Sequence[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    from ..presets.images import load_pictures

    pictures = load_pictures(paths, loaded.size, loaded.channels, loaded.zoom)
    return pictures, loaded.transform(pictures)


def write_json(staging: Staging, destination: Path, text: str) -> Path:
    staging.path(destination).write_text(text + "\n", encoding="utf-8")
    return destination


def explain(
    loaded: Loaded,
    composite: Any,
    description: str,
    sources: Sequence[Path],
    layers: Sequence[str],
    top: int,
    out: Path | None,
    progress: bool,
) -> Result:
    """Prediction, plain heatmap and the ``top`` concepts of each layer for each image."""
    from ..attribution.explain import ConceptExplainer

    paths = image_paths(sources)
    chosen = check_layers(loaded, layers)
    pictures, inputs = load_images(loaded, paths)
    explainer = ConceptExplainer(loaded.model, composite)
    explanations = {}
    with progress_bar(len(chosen), "explain", enabled=progress, unit="layer") as bar:
        for layer in chosen:
            explanations[layer] = explainer(inputs, layer, select=top)
            bar.update(1)
    first = explanations[chosen[0]]
    probabilities = first.prediction.softmax(1)
    stems = [path.stem for path in paths]
    names = stems if len(set(stems)) == len(stems) else [f"{n}-{stem}" for n, stem in enumerate(stems)]
    images: list[dict[str, Any]] = []
    lines: list[str] = []
    with Staging() as staging:
        for sample, (file, name) in enumerate(zip(paths, names, strict=True)):
            target = int(first.targets[sample])
            entry: dict[str, Any] = {
                "file": str(file),
                "prediction": {
                    "class": target,
                    "name": _class_name(loaded, target),
                    "probability": float(probabilities[sample, target]),
                },
                "layers": {},
            }
            lines.append(f"{file}: {_class_name(loaded, target)} ({float(probabilities[sample, target]):.1%})")
            for layer, explanation in explanations.items():
                ids = explanation.concept_ids[sample]
                shares = [float(explanation.concept_shares[sample, j]) for j in range(len(ids))]
                concepts = [{"concept": int(c), "share": s} for c, s in zip(ids, shares, strict=True)]
                figure_path = None
                if out is not None:
                    from ..viz.concepts import concept_figure

                    figure_path = out / f"{name}-{slug(layer)}.png"
                    figure = concept_figure(explanation, pictures, class_names=loaded.class_names, sample=sample)
                    save_figure(figure, staging.path(figure_path))
                entry["layers"][layer] = {
                    "concepts": concepts,
                    "figure": None if figure_path is None else str(figure_path),
                }
                listed = ", ".join(f"{c['concept']} ({c['share']:+.0%})" for c in concepts)
                lines.append(f"  {layer}: {listed}" + (f"  -> {figure_path}" if figure_path else ""))
            images.append(entry)
    return {"model": loaded.name, "composite": description, "layers": chosen, "images": images}, lines


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as :func:`~glocal.build_index` sees them."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def scan(
    loaded: Loaded,
    composite: Any,
    description: str,
    data: str,
    layers: Sequence[str],
    index_dir: Path,
    k: int,
    targets: str,
    batch_size: int | None,
    matrix: bool,
    progress: bool,
) -> Result:
    """Build (or resume) the concept index of ``data`` in ``index_dir``; under ``torchrun`` (``WORLD_SIZE`` > 1)
    each process joins the process group and scans its share (see :func:`~glocal.build_index`)."""
    import os

    from ..index import build_index

    chosen = check_layers(loaded, layers)
    dataset = load_data(data, loaded)
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")
        started = True
    try:
        rank, world = _rank_and_world()
        index = build_index(
            loaded.model,
            composite,
            dataset,
            chosen,
            index_dir,
            k=k,
            targets=targets,
            batch_size=batch_size,
            store_matrix=matrix,
            progress=progress and rank == 0,
        )
    finally:
        if started:
            torch.distributed.destroy_process_group()
    document = {
        "index": str(index_dir),
        "model": loaded.name,
        "composite": description,
        "layers": list(index.layers),
        "samples": len(dataset),
        "complete": bool(index.complete),
        "rank": rank,
        "world": world,
    }
    if rank != 0:  # under torchrun only the first process reports
        return None, []
    return document, [f"indexed {len(dataset)} samples, layers {', '.join(chosen)}, into {index_dir}"]


def _open_index(index_dir: Path) -> Any:
    from ..index import ConceptIndex

    try:
        return ConceptIndex.open(index_dir)
    except FileNotFoundError:
        raise click.BadParameter(
            f"{index_dir} holds no index; build one with `glocal scan`", param_hint="--index"
        ) from None


def refs(
    loaded: Loaded,
    composite: Any,
    data: str,
    index_dir: Path,
    layer: str,
    concepts: list[int],
    mode: str,
    label: int | None,
    n: int,
    out: Path,
    progress: bool,
) -> Result:
    """Reference grids of ``concepts`` of ``layer`` from the index in ``index_dir``."""
    from ..index.references import concept_references

    index = _open_index(index_dir)
    if layer not in index.layers:
        raise click.BadParameter(
            f"the index holds layers {', '.join(index.layers)}, not {layer!r}", param_hint="--layer"
        )
    dataset = load_data(data, loaded)
    attributor = Attributor(loaded.model, composite)
    references = concept_references(
        index,
        dataset,
        attributor,
        layer,
        concepts,
        mode=mode,
        n=n,
        label=label,
        to_image=loaded.picture,
        progress=progress,
    )
    entries: list[dict[str, Any]] = []
    lines: list[str] = []
    suffix = mode + ("" if label is None else f"-class-{label}")
    with Staging() as staging:
        for concept in concepts:
            reference = references[concept]
            destination = out / f"{slug(layer)}-{concept}-{suffix}.png"
            title = f"{layer} concept {concept} ({mode}" + ("" if label is None else f", class {label}") + ")"
            reference.grid(title=title).save(staging.path(destination), format="PNG")
            entries.append(
                {
                    "layer": layer,
                    "concept": concept,
                    "mode": mode,
                    "class": label,
                    "sample_ids": list(reference.sample_ids),
                    "scores": list(reference.scores),
                    "image": str(destination),
                }
            )
            lines.append(f"{layer}:{concept} samples {list(reference.sample_ids)} -> {destination}")
    return {"index": str(index_dir), "references": entries}, lines


def _one_image(loaded: Loaded, image: Path) -> tuple[torch.Tensor, torch.Tensor]:
    pictures, inputs = load_images(loaded, [image])
    return pictures[0], inputs


def _top_concept(attributor: Attributor, inputs: torch.Tensor, layer: str, target: int | None) -> tuple[int, int]:
    with torch.no_grad():
        predicted = int(attributor.model(inputs).argmax())
    target = predicted if target is None else target
    relevance = attributor(inputs, {"y": [target]}, record=[layer], heatmap=False)
    concept = attributor.concept(layer).relevance(relevance.relevances[layer])
    return int(concept[0].argmax()), target


def graph(
    loaded: Loaded,
    composite: Any,
    image: Path,
    layer: str,
    concept: int | None,
    target: int | None,
    widths: list[int],
    blocks: bool,
    out: Path,
    progress: bool,
) -> Result:
    """The attribution graph of ``concept`` (default: the most relevant) of ``layer`` on ``image``."""
    from ..structure.attribution_graph import attribution_graph
    from ..structure.layer_graph import trace_layers

    check_layers(loaded, [layer])
    picture, inputs = _one_image(loaded, image)
    attributor = Attributor(loaded.model, composite)
    if concept is None:
        concept, target = _top_concept(attributor, inputs, layer, target)
    layer_graph = trace_layers(loaded.model, inputs, granularity="blocks") if blocks else None
    result = attribution_graph(
        attributor,
        inputs,
        layer,
        concept,
        target=target,
        widths=widths,
        heatmaps=True,
        layer_graph=layer_graph,
        progress=progress,
    )
    document = result.to_dict()
    with Staging() as staging:
        result.save(staging.path(out), inputs=picture, dpi=100)
        write_json(staging, out.with_suffix(".json"), result.to_json())
    document = {"image": str(image), "png": str(out), "json": str(out.with_suffix(".json")), "graph": document}
    return document, [f"attribution graph of {layer}:{concept}, {len(result.nodes)} nodes -> {out}"]


def path(
    loaded: Loaded,
    composite: Any,
    image: Path,
    steps: str | None,
    layer: str | None,
    target: int | None,
    k: int,
    follow: int,
    blocks: bool,
    out: Path,
    progress: bool,
) -> Result:
    """The concept path from ``steps`` (or the most relevant concept of ``layer``) on ``image``."""
    from ..structure.layer_graph import trace_layers
    from ..structure.paths import concept_path

    picture, inputs = _one_image(loaded, image)
    attributor = Attributor(loaded.model, composite)
    start: Any = steps
    if layer is not None:
        check_layers(loaded, [layer])
        concept, target = _top_concept(attributor, inputs, layer, target)
        start = [(layer, concept)]
    layer_graph = trace_layers(loaded.model, inputs, granularity="blocks") if blocks else None
    result = concept_path(
        attributor, inputs, start, target=target, k=k, follow=follow, layer_graph=layer_graph, progress=progress
    )
    with Staging() as staging:
        save_figure(result.figure(inputs=picture), staging.path(out))
        write_json(staging, out.with_suffix(".json"), result.to_json())
    document = {"image": str(image), "png": str(out), "json": str(out.with_suffix(".json")), "path": result.to_dict()}
    return document, [f"concept path {result} -> {out}"]


def atlas(
    loaded: Loaded,
    composite: Any,
    data: str,
    layers: Sequence[str],
    k: int,
    top: int,
    index_dir: Path | None,
    out: Path,
    progress: bool,
) -> Result:
    """The concept atlas of ``data`` over ``layers``, drawn to ``out`` (with reference thumbnails from an index)."""
    from ..structure.atlas import concept_atlas
    from ..viz.atlas import atlas_figure, atlas_thumbnails

    chosen = check_layers(loaded, layers)
    dataset = load_data(data, loaded)
    attributor = Attributor(loaded.model, composite)
    result = concept_atlas(attributor, dataset, chosen, k=k, progress=progress)
    thumbnails = None
    if index_dir is not None:
        index = _open_index(index_dir)
        thumbnails = atlas_thumbnails(
            result,
            index,
            dataset,
            attributor,
            layers=[layer for layer in chosen if layer in index.layers],
            top=top,
            to_image=loaded.picture,
            progress=progress,
        )
    with Staging() as staging:
        figure = atlas_figure(result, top=top, thumbnails=thumbnails, class_names=loaded.class_names)
        save_figure(figure, staging.path(out))
        write_json(staging, out.with_suffix(".json"), result.to_json())
    lines = [f"atlas of {result.n_samples} samples -> {out}"]
    for layer in chosen:
        lines.append(f"  {layer}: top concepts {result.top(layer, top)}")
    document = {"png": str(out), "json": str(out.with_suffix(".json")), "atlas": result.to_dict()}
    return document, lines


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows: concepts per layer, reference samples, attribution graph widths (``None``: no
    graph), blocks as layers, the faithfulness analyses (concept flipping per layer and the diagnosis), the layers of
    a part graph of the images (top first; none: no part graph), progress bars."""

    top: int = 6
    references: int = 6
    widths: list[int] | None = field(default_factory=lambda: [3, 2])
    blocks: bool = False
    evaluate: bool = False
    parts: tuple[str, ...] = ()
    progress: bool = True


def report(
    loaded: Loaded,
    composite: Any,
    description: str,
    sources: Sequence[Path],
    layers: Sequence[str],
    index_dir: Path | None,
    data: str | None,
    out: Path,
    view: ReportOptions,
) -> Result:
    """One self-contained HTML report of the images (:func:`glocal.report.build_report`)."""
    import importlib

    try:
        report_package = importlib.import_module("glocal.report")
    except ImportError as error:
        raise GlocalError(f"the HTML report is not available in this installation ({error})") from None
    paths = image_paths(sources)
    chosen = check_layers(loaded, layers)
    pictures, inputs = load_images(loaded, paths)
    attributor = Attributor(loaded.model, composite)
    index = None if index_dir is None else _open_index(index_dir)
    dataset = None if data is None else load_data(data, loaded)
    options: dict[str, Any] = {}
    if view.blocks:
        from ..structure.layer_graph import trace_layers

        options["layer_graph"] = trace_layers(loaded.model, inputs[:1], granularity="blocks")
    analyses = _evaluation_analyses(attributor, inputs, chosen, view.progress) if view.evaluate else []
    if view.parts:
        analyses.append(
            _parts_analysis(attributor, inputs, pictures, check_layers(loaded, view.parts, "--parts"), loaded, view)
        )
    if analyses:
        options["analyses"] = analyses
    sections = report_package.build_report(
        attributor,
        inputs,
        layers=chosen,
        pictures=pictures,
        class_names=loaded.class_names,
        concepts=view.top,
        index=index,
        dataset=dataset,
        to_image=loaded.picture,
        references=view.references,
        graph_widths=view.widths,
        name=loaded.name,
        description=description,
        progress=view.progress,
        **options,
    )
    with Staging() as staging:
        report_package.write_report(sections, staging.path(out))
    size = out.stat().st_size
    document = {"report": str(out), "bytes": size, "images": [str(p) for p in paths], "layers": chosen}
    return document, [f"report of {len(paths)} images ({size / 1e6:.1f} MB) -> {out}"]


def _evaluation_analyses(
    attributor: Attributor, inputs: torch.Tensor, layers: Sequence[str], progress: bool
) -> list[Any]:
    """Concept flipping of the images at every layer and the diagnosis, as report analyses."""
    from ..evaluation import concept_flipping, diagnose
    from ..report.analyses import diagnosis_analysis, flipping_analysis

    flipping = [concept_flipping(attributor, inputs, layer, steps=16, progress=progress) for layer in layers]
    diagnosis = diagnose(attributor.model, attributor.composite, inputs, progress=progress)
    return [flipping_analysis(flipping), diagnosis_analysis(diagnosis)]


def _parts_analysis(
    attributor: Attributor,
    inputs: torch.Tensor,
    pictures: torch.Tensor,
    layers: Sequence[str],
    loaded: Loaded,
    view: ReportOptions,
) -> Any:
    """The part graph of the images over ``layers``, as a report analysis."""
    from ..parts.build import part_graph
    from ..report.parts import parts_analysis

    graph = part_graph(attributor, inputs, layers, progress=view.progress)
    return parts_analysis(graph, pictures, class_names=loaded.class_names)


def demo(out: Path, arguments: list[str]) -> Result:
    """Run the demo (:func:`glocal.demo.main`) with ``arguments`` (``--out`` first) into ``out``."""
    from .. import demo as demo_package

    status = demo_package.main(arguments)
    if status != 0:
        raise GlocalError(f"the demo failed (exit status {status}); see the messages above")
    return {"out": str(out), "status": status}, [f"demo written to {out}"]
