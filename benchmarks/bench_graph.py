"""Side-by-side benchmark of attribution graphs: glocal against zennit-crp's ``AttributionGraph``, in one process.

What is measured
----------------
Each case decomposes one concept of one sample into lower-layer concepts with the same widths in both libraries:

* zennit-crp: ``AttributionGraph(CondAttribution(model), trace_model_graph(model, sample, layers), layer_map)``
  called as ``graph(sample, composite, concept, layer, target, width=widths)``;
* glocal: the drop-in ``glocal.compat.AttributionGraph`` with the same call (``glocal_s``), and glocal's own
  ``glocal.structure.attribution_graph.attribution_graph(attributor, sample, layer, concept, target=..., widths=...,
  sole_path=False)`` (``native_s``; its nodes are conditioned on their whole path, which for a sequential model
  with two levels is the same as zennit-crp's condition on the root and the parent).

The layer graph (``trace_model_graph``) is built once per library before timing, as users do; its time is reported
separately (``*_trace_s``). Times are seconds per call; a timed run makes as many calls in a row as fill about 1 s
(``calls_per_run``, at least one), so that millisecond-scale cases average out timer noise. ``speedup = crp_s /
glocal_s`` (target >= 5). The results must agree: the same nodes
and connections in the same order, edge weights within ``1e-5`` (``max_rel_diff``: the largest difference relative
to the largest weight among the same parent's edges; float32 round-off makes tiny weights differ relatively more).

Cases
-----
a  torchvision VGG16 with random weights (``torch.manual_seed(0)``), one random 224x224 image, ``EpsilonPlusFlat``,
   concept ``features.28`` channel with the largest relevance for the predicted class, widths ``[8, 4]``.
b  the trained FashionMNIST CNN of ``../shared/data`` (validation image 0), ``EpsilonPlus`` with
   ``SequentialMergeBatchNorm``, the most relevant unit of ``linear1`` for the predicted class, widths ``[8, 4]``
   (``linear1`` is fed by ``conv2`` and the parallel branch ``parallel.0``; ``conv2`` by ``conv1``).

Process state matters for (b): run alone in a fresh process, zennit-crp's larger tensors go through ``mmap`` until the
allocator has freed bigger ones, which makes it about 20 % slower than after case (a) (or than with
``MALLOC_MMAP_THRESHOLD_=33554432``); glocal's one-sample tensors are not affected. The default run (a, then b)
gives the lower, conservative speed-up for (b).

Output: one JSON object per line on stdout (the ``"machine"`` line first); progress on stderr. Use ``--threads 1``
and ``--repeats 3`` or more for numbers you report.

Usage::

    .venv/bin/python benchmarks/bench_graph.py --repeats 3 --threads 1 --json-out graph.jsonl
    .venv/bin/python benchmarks/bench_graph.py --quick        # smoke run: small input, widths [2, 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import fashion_mnist
import glocal
from common import Arguments, emit_rows, epsilon_plus_flat, log, median, rounded, target_fields, timed
from glocal.attribution.layers import get_layer_names
from glocal.compat import AttributionGraph, ChannelConcept, CondAttribution, trace_model_graph
from glocal.structure.attribution_graph import attribution_graph


@dataclass
class Problem:
    model: torch.nn.Module
    sample: torch.Tensor
    layer: str
    layers: list[str]
    widths: list[int]
    composite: Callable[[], Any]
    concept: int = 0
    target: int = 0

    def choose(self) -> Problem:
        """The predicted class and the concept of ``layer`` most relevant to it."""
        with torch.no_grad():
            self.target = int(self.model(self.sample).argmax())
        result = glocal.Attributor(self.model, self.composite())(
            self.sample, {"y": [self.target]}, record=[self.layer], heatmap=False
        )
        relevance = result.relevances[self.layer][0]
        self.concept = int((relevance.flatten(1).sum(1) if relevance.dim() > 1 else relevance).argmax())
        return self


def vgg_problem(quick: bool) -> Problem:
    from torchvision.models import vgg16

    torch.manual_seed(0)
    model = vgg16().eval()
    size = 64 if quick else 224
    sample = torch.rand(1, 3, size, size)
    layers = get_layer_names(model, [torch.nn.Conv2d, torch.nn.Linear])
    widths = [2, 2] if quick else [8, 4]
    return Problem(model, sample, "features.28", layers, widths, epsilon_plus_flat).choose()


def fashion_problem(data_dir: Path, quick: bool) -> Problem:
    model, sample = fashion_mnist.load_model(data_dir), fashion_mnist.load_images(1, data_dir)
    layers = ["conv1", "conv2", "parallel.0", "linear1", "linear2"]
    widths = [2, 2] if quick else [8, 4]
    return Problem(model, sample, "linear1", layers, widths, fashion_mnist.composite).choose()


# -- the libraries --------------------------------------------------------------------------------------------------


def crp_setup(problem: Problem) -> tuple[Any, float]:
    from crp.attribution import AttributionGraph as CrpGraph
    from crp.attribution import CondAttribution as CrpAttribution
    from crp.concepts import ChannelConcept as CrpChannel
    from crp.graph import trace_model_graph as crp_trace

    model = copy.deepcopy(problem.model)  # zennit-crp switches requires_grad off and leaves it so
    sample = problem.sample.clone().requires_grad_(True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        graph = crp_trace(model, sample, problem.layers)
    seconds = time.perf_counter() - start
    layer_map = {name: CrpChannel() for name in problem.layers}
    return (CrpGraph(CrpAttribution(model), graph, layer_map), sample), seconds


def crp_run(problem: Problem, setup: Any) -> Any:
    graph, sample = setup
    with contextlib.redirect_stdout(sys.stderr):
        return graph(
            sample,
            problem.composite(),
            problem.concept,
            problem.layer,
            problem.target,
            width=problem.widths,
            verbose=False,
        )


def glocal_setup(problem: Problem) -> tuple[Any, float]:
    start = time.perf_counter()
    graph = trace_model_graph(problem.model, problem.sample, problem.layers)
    seconds = time.perf_counter() - start
    layer_map = {name: ChannelConcept() for name in problem.layers}
    return AttributionGraph(CondAttribution(problem.model), graph, layer_map), seconds


def glocal_run(problem: Problem, graph: Any) -> Any:
    return graph(problem.sample, problem.composite(), problem.concept, problem.layer, problem.target, problem.widths)


def native_run(problem: Problem, layer_graph: Any) -> Any:
    attributor = glocal.Attributor(problem.model, problem.composite())
    return attribution_graph(
        attributor,
        problem.sample,
        problem.layer,
        problem.concept,
        target=problem.target,
        widths=problem.widths,
        layer_graph=layer_graph,
        sole_path=False,
        per_layer=True,  # zennit-crp's counting: widths children per input layer, the same nodes as the others
    )


def compare(ours: Any, theirs: Any) -> tuple[bool, float]:
    """Same nodes and connections (order included), and the largest difference of edge weights relative to the
    largest weight among the same parent's edges (a weight near zero has no meaningful relative error)."""
    same = ours.nodes == theirs.nodes and list(ours.connections) == list(theirs.connections)
    worst = 0.0
    for key, edges in theirs.connections.items():
        mine = ours.connections.get(key, [])
        same = same and [(layer, c) for layer, c, _ in mine] == [(layer, c) for layer, c, _ in edges]
        scale = max((abs(b) for _, _, b in edges), default=0.0) or 1e-12
        for (_, _, a), (_, _, b) in zip(mine, edges, strict=False):
            worst = max(worst, abs(a - b) / scale)
    return same, worst


def calls_for(fn: Callable[[], Any], budget: float = 1.0) -> int:
    """How many calls of ``fn`` fill about ``budget`` seconds (at least one): millisecond-scale cases are timed
    over many calls so that timer and scheduler noise average out."""
    seconds, _ = timed(fn)
    return max(1, min(1000, round(budget / max(seconds, 1e-6))))


def run_case(key: str, args: argparse.Namespace) -> dict[str, Any]:
    problem = vgg_problem(args.quick) if key == "a" else fashion_problem(args.data_dir, args.quick)
    log(f"[{key}] root {problem.layer}:{problem.concept}, target {problem.target}, widths {problem.widths}")
    crp_graph, crp_trace_s = crp_setup(problem)
    our_graph, glocal_trace_s = glocal_setup(problem)
    layer_graph = our_graph.graph.graph
    # warm-up, untimed
    crp_result = crp_run(problem, crp_graph)
    ours = glocal_run(problem, our_graph)
    native_run(problem, layer_graph)
    same, worst = compare(ours, crp_result)
    sides = {
        "crp": lambda: crp_run(problem, crp_graph),
        "glocal": lambda: glocal_run(problem, our_graph),
        "native": lambda: native_run(problem, layer_graph),
    }
    calls = {name: calls_for(fn) for name, fn in sides.items()}
    crp_times, glocal_times, native_times = [], [], []
    for repeat in range(args.repeats):
        crp_times.append(timed(sides["crp"], calls["crp"])[0])
        glocal_times.append(timed(sides["glocal"], calls["glocal"])[0])
        native_times.append(timed(sides["native"], calls["native"])[0])
        log(
            f"[{key}] run {repeat + 1}: zennit-crp {crp_times[-1]:.3f} s, glocal compat {glocal_times[-1]:.3f} s, "
            f"glocal native {native_times[-1]:.3f} s"
        )
    crp_s, glocal_s, native_s = median(crp_times), median(glocal_times), median(native_times)
    return {
        "case": key,
        "model": "vgg16 random" if key == "a" else "FashionMNIST CNN (trained)",
        "input": list(problem.sample.shape),
        "root": f"{problem.layer}:{problem.concept}",
        "target": problem.target,
        "widths": problem.widths,
        "nodes": len(ours.nodes),
        "same_nodes_and_connections": same,
        "max_rel_diff": worst,
        "repeats": args.repeats,
        "calls_per_run": calls,
        "crp_s": round(crp_s, 5),
        "glocal_s": round(glocal_s, 5),
        "native_s": round(native_s, 5),
        **target_fields("speedup", crp_s / glocal_s, 5.0),
        "native_speedup": round(crp_s / native_s, 2),
        "crp_trace_s": round(crp_trace_s, 4),
        "glocal_trace_s": round(glocal_trace_s, 4),
        "crp_runs_s": rounded(crp_times, 5),
        "glocal_runs_s": rounded(glocal_times, 5),
        "native_runs_s": rounded(native_times, 5),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Arguments(__doc__, cases=("a", "b"), repeats=1, quick="smoke run: 64x64 VGG16 input, widths [2, 2]")
    return parser.parse(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit_rows(args.threads, args.json_out, [lambda key=key: run_case(key, args) for key in args.cases])
    return 0


if __name__ == "__main__":
    sys.exit(main())
