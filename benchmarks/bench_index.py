"""Side-by-side benchmark of a dataset scan plus reference images: glocal's index against zennit-crp, in one process.

What is measured
----------------
Each case runs the same user task with both libraries: scan a labelled dataset once, keeping the top-40 samples per
channel of every conv layer (relevance started at each sample's *label*, as zennit-crp's
``FeatureVisualization`` does), then produce reference images for 8 concepts (channels ``0..7`` of the last conv
layer): the top ``--refs`` samples (8, zennit-crp's default ``r_range=(0, 8)``) of each concept by summed relevance,
each with its conditional heatmap cropped to the receptive field of the concept's most relevant unit and rendered
as a picture.

* zennit-crp: ``FeatureVisualization(CondAttribution(model), dataset, {layer: ChannelConcept()}, path=tmp)``,
  ``.run(composite, 0, N, batch_size)`` (its top-40 is fixed), then
  ``.get_max_reference(concepts, layer, "relevance", (0, refs), composite, rf=True, plot_fn=vis_opaque_img)``.
  It writes its arrays into a temporary directory, removed afterwards.
* glocal: ``build_index(model, composite, dataset, layers, tmp, k=40, targets="label", batch_size, progress=False)``
  into a fresh temporary directory, then ``glocal.concept_references(index, dataset, attributor, layer, concepts,
  mode="relmax_sum", n=refs, batch_size)`` (the index's top samples loaded from the dataset, conditional heatmaps,
  receptive-field crops and rendered pictures; the samples of all 8 concepts share batches).
  Its heatmaps start at each sample's label and pass through the concept only (glocal's ``mode="relevance"``, a full
  backward pass from the output); zennit-crp's start at the concept's activation in its layer (``start_layer``).
  ``--ref-mode activation`` makes glocal's ActMax references instead (``mode="actmax_sum"``: ranked by activation,
  heatmaps from the activation).

``crp_s`` / ``glocal_s`` are end-to-end seconds (scan + references; the split is in ``*_scan_s`` / ``*_refs_s``),
``speedup = crp_s / glocal_s`` (target >= 3).

Bare passes: ``bare_s`` is the time of the LRP forward + backward passes the scan cannot avoid, measured as zennit's
``Gradient`` attributor with the same composite over the same batches (same batch size, data already in memory),
each batch's relevance started at a one-hot of its labels and propagated back *to the input*.
``scan_over_bare = glocal_scan_s / bare_s`` (target <= 1.5) is what glocal's scan costs beyond them (statistics,
top-k, data loading, checkpoints, writing the index). ``bare_glocal_s`` is the same passes through glocal's own
engine (``Attributor.session(batch, record=layers, heatmap=False)`` then one ``attribute`` from the labels; the
backward pass stops at the lowest recorded layer), for reference.

Memory: peak RSS growth during a run (``common.PeakMemory``: kernel high-water mark reset before the run, plus a
sampling thread), in MiB. For case (a) glocal's scan alone also runs on 1000 and 5000
images (32 and 64 with ``--quick``): ``glocal_scan_peak_mb_by_n`` shows whether its memory grows with the dataset.

Every timed run is preceded by an untimed warm-up of each side on a few batches. The timed runs of the libraries
alternate (zennit-crp, glocal, bare) ``--repeats`` times; medians are reported, all runs listed.

Cases
-----
a  the trained FashionMNIST CNN (``../shared/data`` beside the checkout), its 5000 validation images and labels,
   layers ``conv1``, ``conv2``, ``parallel.0``, ``EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])``;
   references from ``conv2``.
b  torchvision VGG11 with random weights (``torch.manual_seed(0)``), 256 random 64x64 images (uniform in [0, 1])
   with random labels, all 8 conv layers, ``EpsilonPlusFlat()``; references from ``features.18``.

Output: one JSON object per line on stdout (first the ``"machine"`` line, then one per case); progress and the
libraries' own chatter go to stderr. Timings on a shared machine are noisy: use ``--threads 1`` and ``--repeats 3``
or more for numbers you report.

Usage::

    .venv/bin/python benchmarks/bench_index.py                          # both cases, 1 repeat
    .venv/bin/python benchmarks/bench_index.py --cases a --repeats 3 --threads 1 --json-out index.jsonl
    .venv/bin/python benchmarks/bench_index.py --quick                  # smoke run: 64 / 16 images
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import fashion_mnist
import glocal
from common import (
    MB,
    Arguments,
    LabelledImages,
    emit_rows,
    epsilon_plus_flat,
    log,
    measure,
    median,
    rounded,
    target_fields,
    timed,
)
from glocal.index.build import build_index
from glocal.index.references import concept_references

K = 40  # zennit-crp's FeatureVisualization keeps a fixed top-40


@dataclass
class Problem:
    model: torch.nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    layers: list[str]
    ref_layer: str
    composite: Callable[[], Any]
    concepts: list[int]
    batch_size: int

    def dataset(self, n: int | None = None) -> LabelledImages:
        n = len(self.labels) if n is None else n
        return LabelledImages(self.images[:n], self.labels[:n])


def fashion_problem(data_dir: Path, n_images: int, batch_size: int) -> Problem:
    model = fashion_mnist.load_model(data_dir)
    images = fashion_mnist.load_images(n_images, data_dir)
    labels = fashion_mnist.load_labels(n_images, data_dir)
    layers = ["conv1", "conv2", "parallel.0"]
    return Problem(model, images, labels, layers, "conv2", fashion_mnist.composite, list(range(8)), batch_size)


def vgg11_problem(n_images: int, batch_size: int) -> Problem:
    from torchvision.models import vgg11

    torch.manual_seed(0)
    model = vgg11().eval()
    images = torch.rand(n_images, 3, 64, 64)
    labels = torch.randint(0, 1000, (n_images,))
    layers = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)]
    return Problem(model, images, labels, layers, layers[-1], epsilon_plus_flat, list(range(8)), batch_size)


# -- the two libraries ----------------------------------------------------------------------------------------------


def run_crp(problem: Problem, n: int, refs: int) -> dict[str, Any]:
    """zennit-crp end to end: FeatureVisualization.run, then get_max_reference with receptive-field crops."""
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from crp.image import vis_opaque_img
    from crp.visualization import FeatureVisualization

    flags = [(p, p.requires_grad) for p in problem.model.parameters()]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-crp-") as tmp, contextlib.redirect_stdout(sys.stderr):
            start = time.perf_counter()
            attribution = CondAttribution(problem.model)
            layer_map = {layer: ChannelConcept() for layer in problem.layers}
            fv = FeatureVisualization(attribution, problem.dataset(n), layer_map, path=tmp)
            fv.run(problem.composite(), 0, n, batch_size=problem.batch_size)
            scan_s = time.perf_counter() - start
            refs_s, references = timed(
                lambda: fv.get_max_reference(
                    problem.concepts,
                    problem.ref_layer,
                    "relevance",
                    (0, refs),
                    composite=problem.composite(),
                    rf=True,
                    plot_fn=vis_opaque_img,
                    batch_size=problem.batch_size,
                )
            )
            total = time.perf_counter() - start
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
    return {"s": total, "scan_s": scan_s, "refs_s": refs_s, "n_refs": sum(len(r) for r in references.values())}


def glocal_references(problem: Problem, index: Any, refs: int, mode: str) -> list[Any]:
    attributor = glocal.Attributor(problem.model, problem.composite())
    made = concept_references(
        index,
        problem.dataset(),
        attributor,
        problem.ref_layer,
        problem.concepts,
        mode="relmax_sum" if mode == "relevance" else "actmax_sum",
        n=refs,
        batch_size=problem.batch_size,
    )
    return list(made.values())


def glocal_scan(problem: Problem, n: int, directory: Path) -> Any:
    return build_index(
        problem.model,
        problem.composite(),
        problem.dataset(n),
        problem.layers,
        directory,
        k=K,
        targets="label",
        batch_size=problem.batch_size,
        progress=False,
    )


def run_glocal(problem: Problem, n: int, refs: int, mode: str = "relevance") -> dict[str, Any]:
    """glocal end to end: build_index into a fresh directory, then concept_references for all concepts."""
    with tempfile.TemporaryDirectory(prefix="bench-glocal-") as tmp:
        start = time.perf_counter()
        index = glocal_scan(problem, n, Path(tmp) / "index")
        scan_s = time.perf_counter() - start
        refs_s, references = timed(lambda: glocal_references(problem, index, refs, mode))
        total = time.perf_counter() - start
    return {"s": total, "scan_s": scan_s, "refs_s": refs_s, "n_refs": sum(len(r.images) for r in references)}


def batches(problem: Problem, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    size = problem.batch_size
    return [(problem.images[i : i + size], problem.labels[i : i + size]) for i in range(0, n, size)]


def run_bare_zennit(problem: Problem, n: int) -> float:
    """zennit Gradient attributor, same composite and batches, relevance from the labels back to the input."""
    from zennit.attribution import Gradient

    parts = batches(problem, n)
    start = time.perf_counter()
    with Gradient(model=problem.model, composite=problem.composite()) as attributor:
        for inputs, labels in parts:

            def one_hot(output: torch.Tensor, labels: torch.Tensor = labels) -> torch.Tensor:
                return torch.nn.functional.one_hot(labels, output.shape[1]).to(output.dtype)

            attributor(inputs, one_hot)
    return time.perf_counter() - start


def run_bare_glocal(problem: Problem, n: int) -> float:
    """glocal's engine: one forward recording the layers, one backward from the labels, no heatmap."""
    parts = batches(problem, n)
    start = time.perf_counter()
    attributor = glocal.Attributor(problem.model, problem.composite())
    for inputs, labels in parts:
        with attributor.session(inputs, record=problem.layers, heatmap=False) as run:
            run.attribute(glocal.Condition(targets=glocal.PerSample([[int(t)] for t in labels])))
    return time.perf_counter() - start


# -- cases ----------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    key: str
    description: str
    n_images: int
    quick_images: int
    memory_sizes: tuple[int, ...] = ()
    quick_memory_sizes: tuple[int, ...] = ()


CASES = {
    "a": Case(
        "a",
        "FashionMNIST CNN, validation images, conv1+conv2+parallel.0, EpsilonPlus+SequentialMergeBatchNorm",
        5000,
        64,
        (1000, 5000),
        (32, 64),
    ),
    "b": Case("b", "VGG11 random, random 64x64 images and labels, all conv layers, EpsilonPlusFlat", 256, 16),
}


def build_problem(case: Case, args: argparse.Namespace, n_images: int) -> Problem:
    if case.key == "a":
        return fashion_problem(args.data_dir, n_images, args.batch_size)
    return vgg11_problem(n_images, args.batch_size)


def run_case(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    n = args.images or (case.quick_images if args.quick else case.n_images)
    memory_sizes = case.quick_memory_sizes if args.quick else case.memory_sizes
    n_max = max(n, *memory_sizes) if memory_sizes else n
    problem = build_problem(case, args, n_max)
    refs = min(args.refs, n)
    log(f"[{case.key}] {case.description}: {n} images, layers {problem.layers}, references {problem.ref_layer}")

    # untimed warm-up of every side on a few batches
    warm = min(n, 2 * problem.batch_size)
    run_crp(problem, warm, min(refs, warm))
    run_glocal(problem, warm, min(refs, warm), args.ref_mode)
    run_bare_zennit(problem, warm)
    run_bare_glocal(problem, warm)

    crp_runs, glocal_runs, bare_runs, bare_glocal_runs = [], [], [], []
    crp_peaks, glocal_peaks = [], []
    for repeat in range(args.repeats):
        _seconds, peak, crp = measure(lambda: run_crp(problem, n, refs))
        crp_runs.append(crp)
        crp_peaks.append(peak)
        _seconds, peak, ours = measure(lambda: run_glocal(problem, n, refs, args.ref_mode))
        glocal_runs.append(ours)
        glocal_peaks.append(peak)
        bare_runs.append(run_bare_zennit(problem, n))
        bare_glocal_runs.append(run_bare_glocal(problem, n))
        log(
            f"[{case.key}] run {repeat + 1}: zennit-crp {crp['s']:.2f} s (scan {crp['scan_s']:.2f}), "
            f"glocal {ours['s']:.2f} s (scan {ours['scan_s']:.2f}), bare zennit {bare_runs[-1]:.2f} s, "
            f"bare glocal {bare_glocal_runs[-1]:.2f} s"
        )

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return median([r[key] for r in runs])

    crp_s, glocal_s = med(crp_runs, "s"), med(glocal_runs, "s")
    glocal_scan_s, bare_s = med(glocal_runs, "scan_s"), median(bare_runs)
    row: dict[str, Any] = {
        "case": case.key,
        "description": case.description,
        "n_images": n,
        "layers": problem.layers,
        "ref_layer": problem.ref_layer,
        "concepts": problem.concepts,
        "refs_per_concept": refs,
        "glocal_ref_mode": args.ref_mode,
        "k": K,
        "batch_size": problem.batch_size,
        "repeats": args.repeats,
        "crp_s": round(crp_s, 4),
        "glocal_s": round(glocal_s, 4),
        **target_fields("speedup", crp_s / glocal_s, 3.0),
        "crp_scan_s": round(med(crp_runs, "scan_s"), 4),
        "crp_refs_s": round(med(crp_runs, "refs_s"), 4),
        "glocal_scan_s": round(glocal_scan_s, 4),
        "glocal_refs_s": round(med(glocal_runs, "refs_s"), 4),
        "bare_s": round(bare_s, 4),
        "bare_method": "zennit Gradient attributor, same composite and batches, label one-hot back to the input",
        "bare_glocal_s": round(median(bare_glocal_runs), 4),
        **target_fields("scan_over_bare", glocal_scan_s / bare_s, 1.5, digits=3, at_most=True),
        "scan_over_bare_glocal": round(glocal_scan_s / median(bare_glocal_runs), 3),
        "crp_peak_mb": round(max(crp_peaks) / MB, 1),
        "glocal_peak_mb": round(max(glocal_peaks) / MB, 1),
        "crp_n_refs": crp_runs[-1]["n_refs"],
        "glocal_n_refs": glocal_runs[-1]["n_refs"],
        "crp_runs_s": rounded(r["s"] for r in crp_runs),
        "glocal_runs_s": rounded(r["s"] for r in glocal_runs),
        "bare_runs_s": rounded(bare_runs),
    }
    if memory_sizes:
        by_n: dict[str, float] = {}
        for size in memory_sizes:
            with tempfile.TemporaryDirectory(prefix="bench-glocal-mem-") as tmp:
                _seconds, peak, _index = measure(
                    lambda size=size, tmp=tmp: glocal_scan(problem, size, Path(tmp) / "index")
                )
            by_n[str(size)] = round(peak / MB, 1)
            log(f"[{case.key}] glocal scan of {size} images: peak {peak / MB:.1f} MiB")
        row["glocal_scan_peak_mb_by_n"] = by_n
    return row


# -- CLI ------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Arguments(__doc__, cases=CASES, repeats=1, quick="smoke run: 64 images in (a), 16 in (b)")
    parser.add_argument("--images", type=int, default=None, help="override the number of images of every case")
    parser.add_argument("--refs", type=int, default=8, help="reference samples per concept (default 8)")
    parser.add_argument(
        "--ref-mode",
        choices=("relevance", "activation"),
        default="relevance",
        help="glocal's references: RelMax, heatmaps from the label through the concept (default), or ActMax, "
        "ranked by and started from the concept's activation",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="scan batch size for every side (default 32)")
    return parser.parse(argv, at_least_one=("refs", "batch_size", "images"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit_rows(args.threads, args.json_out, [lambda key=key: run_case(CASES[key], args) for key in args.cases])
    return 0


if __name__ == "__main__":
    sys.exit(main())
