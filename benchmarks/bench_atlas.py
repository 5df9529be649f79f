"""Benchmark of the concept atlas against the bare LRP passes it needs, in one process.

What is measured
----------------
The trained FashionMNIST CNN (``../shared/data`` beside the checkout), its first ``--images`` (1000) validation
images with their labels, ``EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])``, the layers ``conv1``, ``conv2``,
``parallel.0`` (all conv layers) and ``linear1``, batches of ``--batch-size`` (32), ``k = 5``:

``atlas_s``
    ``glocal.concept_atlas(attributor, dataset, layers, k=5, batch_size=32)``: the global atlas, votes started
    at each sample's label. The dataset is a map-style dataset of ``(image, label)`` items over in-memory tensors, so
    the time includes loading the items into batches.
``bare_s``
    The LRP passes the global atlas cannot avoid: per batch (already in memory, labels as ints) one glocal engine
    session that runs one forward pass recording the same layers and one backward pass from the labels
    (``Attributor.session(batch, record=layers, heatmap=False)`` then one ``run.attribute``); it stops at the lowest
    recorded layer.
``atlas_over_bare``
    ``atlas_s / bare_s``; the target is at most 2.
``regional_s``, ``bare_regional_s``, ``regional_over_bare``
    The same for the regional atlas (``region=centre_square(--region-size)``, 14 pixels): its bare passes are, per
    batch, the forward pass, one backward pass from the labels, and one ``run.region_relevance`` over all layers (one
    double-backward pass that scores all units of the layers by the relevance they put inside the region).

Each side runs once untimed on two batches first; then the four sides alternate ``--repeats`` times (atlas, bare,
regional atlas, bare regional) so that slow drifts of the machine's load hit all of them; medians are reported and
all runs listed. ``agreement`` compares the regional atlas with the global one per layer
(:meth:`~glocal.structure.atlas.ConceptAtlas.agreement`), and ``top`` lists each layer's three most voted concepts.

Output: one JSON object per line on stdout (first the ``"machine"`` line, then the case); progress goes to stderr.
Timings on a shared machine are noisy: ``--threads 1`` (the default) keeps torch's threads from waiting for each other
while other processes compete for the cores; use ``--repeats 3`` or more for numbers you report.

Usage::

    .venv/bin/python benchmarks/bench_atlas.py --threads 1 --repeats 3          # the reported numbers
    .venv/bin/python benchmarks/bench_atlas.py --quick                          # smoke run: 64 images, 1 repeat
    .venv/bin/python benchmarks/bench_atlas.py --images 5000 --json-out atlas.jsonl
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import fashion_mnist
import glocal
from common import Arguments, LabelledImages, emit_rows, log, median, rounded, target_fields, timed
from glocal.structure.atlas import ConceptAtlas, centre_square, concept_atlas

LAYERS = ["conv1", "conv2", "parallel.0", "linear1"]
TARGET_RATIO = 2.0


@dataclass
class Problem:
    model: torch.nn.Module
    images: torch.Tensor
    labels: list[int]
    batch_size: int
    k: int
    region_size: int

    def dataset(self, n: int) -> LabelledImages:
        return LabelledImages(self.images[:n], self.labels[:n])

    def batches(self, n: int) -> list[tuple[torch.Tensor, list[int]]]:
        size = self.batch_size
        return [(self.images[i : min(i + size, n)], self.labels[i : min(i + size, n)]) for i in range(0, n, size)]


def fashion_problem(data_dir: Path, n_images: int, batch_size: int, k: int, region_size: int) -> Problem:
    model, images = fashion_mnist.load_model(data_dir), fashion_mnist.load_images(n_images, data_dir)
    labels = fashion_mnist.load_labels(n_images, data_dir).tolist()
    return Problem(model, images, labels, batch_size, k, region_size)


# -- the four sides -------------------------------------------------------------------------------------------------


def run_atlas(problem: Problem, n: int, regional: bool) -> ConceptAtlas:
    attributor = glocal.Attributor(problem.model, fashion_mnist.composite())
    return concept_atlas(
        attributor,
        problem.dataset(n),
        LAYERS,
        k=problem.k,
        region=centre_square(problem.region_size) if regional else None,
        batch_size=problem.batch_size,
    )


def run_bare(problem: Problem, n: int, regional: bool) -> None:
    """Per batch: one forward pass, one backward pass from the labels (and one region double-backward pass)."""
    attributor = glocal.Attributor(problem.model, fashion_mnist.composite())
    square = centre_square(problem.region_size)
    for inputs, labels in problem.batches(n):
        with attributor.session(inputs, record=LAYERS, heatmap=False) as run:
            condition = glocal.Condition(targets=glocal.PerSample([[label] for label in labels]))
            run.attribute(condition)
            if regional:
                run.region_relevance(LAYERS, square(inputs), condition)


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    n = args.images or (64 if args.quick else 1000)
    problem = fashion_problem(args.data_dir, n, args.batch_size, args.k, args.region_size)
    n = len(problem.labels)
    log(f"[fashion] {n} images, layers {LAYERS}, k={args.k}, batch {args.batch_size}, {args.repeats} repeat(s)")

    warm = min(n, 2 * problem.batch_size)
    for regional in (False, True):
        run_atlas(problem, warm, regional)
        run_bare(problem, warm, regional)

    runs: dict[str, list[float]] = {"atlas": [], "bare": [], "regional": [], "bare_regional": []}
    atlas = regional_atlas = None
    for repeat in range(args.repeats):
        seconds, atlas = timed(lambda: run_atlas(problem, n, False))
        runs["atlas"].append(seconds)
        runs["bare"].append(timed(lambda: run_bare(problem, n, False))[0])
        seconds, regional_atlas = timed(lambda: run_atlas(problem, n, True))
        runs["regional"].append(seconds)
        runs["bare_regional"].append(timed(lambda: run_bare(problem, n, True))[0])
        log(
            f"[fashion] run {repeat + 1}: atlas {runs['atlas'][-1]:.3f} s, bare {runs['bare'][-1]:.3f} s, "
            f"regional atlas {runs['regional'][-1]:.3f} s, bare regional {runs['bare_regional'][-1]:.3f} s"
        )
    assert atlas is not None and regional_atlas is not None
    atlas_s, bare_s = median(runs["atlas"]), median(runs["bare"])
    regional_s, bare_regional_s = median(runs["regional"]), median(runs["bare_regional"])
    agreement = regional_atlas.agreement(atlas)
    return {
        "case": "fashion",
        "description": "FashionMNIST CNN, validation images and labels, EpsilonPlus+SequentialMergeBatchNorm",
        "n_images": n,
        "layers": LAYERS,
        "k": args.k,
        "batch_size": args.batch_size,
        "region": regional_atlas.region,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "atlas_s": round(atlas_s, 4),
        "bare_s": round(bare_s, 4),
        **target_fields(
            "atlas_over_bare",
            atlas_s / bare_s,
            TARGET_RATIO,
            digits=3,
            at_most=True,
            meets="meets_target",
        ),
        "regional_s": round(regional_s, 4),
        "bare_regional_s": round(bare_regional_s, 4),
        "regional_over_bare": round(regional_s / bare_regional_s, 3),
        "bare_method": "glocal sessions per batch: forward recording the layers, one backward from the labels",
        "bare_regional_method": "as bare_s, plus one Run.region_relevance over all layers",
        "agreement": {
            layer: {name: None if math.isnan(value) else round(value, 4) for name, value in scores.items()}
            for layer, scores in agreement.items()
        },
        "top": {layer: atlas.top(layer, 3) for layer in LAYERS},
        "regional_top": {layer: regional_atlas.top(layer, 3) for layer in LAYERS},
        **{f"{side}_runs_s": rounded(times) for side, times in runs.items()},
    }


# -- CLI ------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Arguments(__doc__, repeats=3, quick="smoke run: 64 images", threads=1)
    parser.add_argument("--images", type=int, default=None, help="number of validation images (default 1000)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of every side (default 32)")
    parser.add_argument("--k", type=int, default=5, help="concepts per ballot (default 5)")
    parser.add_argument("--region-size", type=int, default=14, help="side of the centre square in pixels (14)")
    return parser.parse(argv, at_least_one=("batch_size", "k", "region_size", "images"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit_rows(args.threads, args.json_out, [lambda: run_case(args)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
