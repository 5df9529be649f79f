"""Side-by-side benchmark of glocal's conditional attributions against zennit-crp, in one process.

What is measured
----------------
For each case, both libraries compute the same conditional heatmaps (CRP): for every image and every selected
channel ``c`` of one layer, the input relevance under the condition ``{layer: [c], "y": [predicted class]}``
(relevance reaches the input only through the conditioned layer: glocal's ``sole_path=True``, zennit-crp's
``exclude_parallel=True``, both defaults).

* glocal: one ``glocal.Attributor(model, composite)(data, conditions)`` call with all conditions.
* zennit-crp: its best option for the case. Each of ``generate`` (one image at a time) with ``batch_size`` 8, 16
  and 32, and one ``__call__`` with all conditions (the data repeated once per condition) runs once; the fastest is
  then timed ``--repeats`` times. ``CondAttribution`` is created fresh for every run with its default
  ``no_param_grad=True`` (its fastest setting: no parameter gradients); the parameters' ``requires_grad`` flags are
  restored afterwards, so glocal always sees the model as the user gave it (parameters requiring gradients).

A run's time covers everything a user pays for: building the attributor and composite, the forward pass, all
backward passes and the heatmaps. glocal gets one untimed warm-up run first (zennit-crp's option trials serve as
its warm-up); the timed runs of the two libraries then alternate, so slow drifts of the machine's load hit both.

Peak memory is the growth of the process's resident set size during one run (``common.PeakMemory``: the kernel's
high-water mark and a sampling thread), the maximum over the timed runs.

Cases
-----
a  torchvision VGG16 (random weights, ``torch.manual_seed(0)``), one random 224x224 image, the top-32 channels of
   ``features.28`` (ranked by their unconditional relevance for the predicted class), ``EpsilonPlusFlat()``.
   Also: the marginal cost of one more concept for glocal ((time for 32 concepts - time for 8) / 24), one plain
   forward pass (``torch.no_grad``), one plain input-gradient backward from the ``features.28`` output to the input
   (autograd, no zennit), and the ratio marginal / plain backward.
b  as (a), for ``features.10``.
c  torchvision ResNet18 (random weights), ``EpsilonPlus(canonizers=[ResNetCanonizer()])``, 32 channels of
   ``layer4.1.conv2``.
d  the trained FashionMNIST CNN (``../shared/data`` beside the checkout), ``EpsilonPlus(canonizers=
   [SequentialMergeBatchNorm()])``, the 16 channels of ``conv2`` (ranked by relevance summed over the images) for
   64 validation images, each explained for its own predicted class.

Reading the output
------------------
Every line on stdout is one JSON object; progress goes to stderr. The first line (``"machine"``) describes the
machine and versions. Then one line per case:

``glocal_s`` / ``crp_s``
    median seconds of the timed runs (``glocal_runs_s`` / ``crp_runs_s`` list them);
``speedup``
    ``crp_s / glocal_s``; ``target_speedup`` and ``meets_target`` compare it with the project's goal;
``crp_option``
    zennit-crp's fastest option, ``crp_options`` the trial time, peak memory and heatmap difference of each;
``glocal_peak_mb`` / ``crp_peak_mb``
    peak RSS growth in MiB;
``heatmap_max_rel_diff``
    the largest ``max|h_glocal - h_crp| / max|h_crp|`` over all heatmaps (each normalised by its own maximum)
    and over all zennit-crp options tried. In float32 this is round-off: ~1e-6 for the small models, ~1e-4 for
    the random VGG16 (there each library is itself ~2e-4 away from a float64 run); ``--dtype float64`` brings it to
    ~1e-12 where the two agree;
``marginal_s``, ``forward_s``, ``backward_s``, ``marginal_over_backward`` (case a)
    the extra seconds per concept for glocal, one plain forward, one plain input-gradient backward, and their ratio.

Timings on a shared or busy machine are noisy; use ``--repeats 5`` or more for numbers you report. Each case line
also carries ``load_avg`` (the 1-minute load before and after the case). When other processes compete for the
cores, torch's default multi-threading can slow every operation down by an order of magnitude (its threads wait
for each other); ``--threads 1`` gives far steadier numbers on such a machine.

Usage::

    .venv/bin/python benchmarks/bench_engine.py                       # all cases, 3 repeats
    .venv/bin/python benchmarks/bench_engine.py --cases a --repeats 5 --json-out bench.jsonl
    .venv/bin/python benchmarks/bench_engine.py --quick               # smoke run: 1 repeat, few concepts
    .venv/bin/python benchmarks/bench_engine.py --threads 1           # steadier on a shared machine
    .venv/bin/python benchmarks/bench_engine.py --quick --dtype float64   # exactness check of the heatmaps
    .venv/bin/python benchmarks/bench_engine.py --cases b --crp-options generate-bs8   # skip zennit-crp's trials
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch

import fashion_mnist
import glocal
from common import MB, Arguments, emit_rows, epsilon_plus_flat, log, measure, median, rounded, target_fields

CRP_OPTIONS = ("generate-bs8", "generate-bs16", "generate-bs32", "call")


# -- models ---------------------------------------------------------------------------------------------------------


@cache
def vgg16() -> torch.nn.Module:
    from torchvision.models import vgg16 as build

    torch.manual_seed(0)
    return build().eval()


def resnet18() -> torch.nn.Module:
    from torchvision.models import resnet18 as build

    torch.manual_seed(0)
    return build().eval()


def random_image() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(1, 3, 224, 224)


def epsilon_plus_resnet() -> Any:
    from zennit.composites import EpsilonPlus
    from zennit.torchvision import ResNetCanonizer

    return EpsilonPlus(canonizers=[ResNetCanonizer()])


# -- the two libraries ----------------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One benchmark problem: ``data`` (N, ...), each image's target, and the channels of ``layer`` to condition on."""

    model: torch.nn.Module
    data: torch.Tensor
    layer: str
    composite: Callable[[], Any]
    targets: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)

    def glocal_conditions(self, channels: list[int]) -> list[Any]:
        if len(set(self.targets)) == 1:
            return [{self.layer: [c], "y": [self.targets[0]]} for c in channels]
        per_sample = glocal.PerSample([[t] for t in self.targets])
        return [glocal.Condition(targets=per_sample, layers={self.layer: [c]}) for c in channels]

    def crp_conditions(self, image: int, channels: list[int]) -> list[dict[str, list[int]]]:
        return [{self.layer: [c], "y": [self.targets[image]]} for c in channels]


def predict_and_rank(problem: Problem, n_concepts: int) -> None:
    """Fill in the predicted classes and the top channels of the layer by unconditional relevance (untimed)."""
    with torch.no_grad():
        problem.targets = problem.model(problem.data).argmax(1).tolist()
    per_sample = glocal.PerSample([[t] for t in problem.targets])
    result = glocal.Attributor(problem.model, problem.composite())(
        problem.data, glocal.Condition(targets=per_sample), record=[problem.layer], heatmap=False
    )
    relevance = result.relevances[problem.layer]
    per_channel = relevance.flatten(2).sum(2).sum(0) if relevance.dim() > 2 else relevance.sum(0)
    k = min(n_concepts, per_channel.numel())
    problem.channels = per_channel.topk(k).indices.tolist()


def run_glocal(problem: Problem, channels: list[int]) -> torch.Tensor:
    result = glocal.Attributor(problem.model, problem.composite())(problem.data, problem.glocal_conditions(channels))
    assert result.heatmap is not None
    return result.heatmap


@contextlib.contextmanager
def restored_requires_grad(model: torch.nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def run_crp(problem: Problem, channels: list[int], option: str) -> torch.Tensor:
    """zennit-crp's heatmaps, rows in glocal's order (image-major)."""
    from crp.attribution import CondAttribution

    with restored_requires_grad(problem.model):
        attribution = CondAttribution(problem.model)  # no_param_grad=True: its fastest setting
        composite = problem.composite()
        n = problem.data.shape[0]
        if option == "call":
            conditions = [c for image in range(n) for c in problem.crp_conditions(image, channels)]
            data = problem.data.repeat_interleave(len(channels), dim=0).requires_grad_(True)
            return attribution(data, conditions, composite).heatmap.detach()
        batch_size = int(option.removeprefix("generate-bs"))
        heatmaps = []
        for image in range(n):
            data = problem.data[image : image + 1].clone().requires_grad_(True)
            conditions = problem.crp_conditions(image, channels)
            for result in attribution.generate(data, conditions, composite, batch_size=batch_size, verbose=False):
                heatmaps.append(result.heatmap.detach())
        return torch.cat(heatmaps)


def crp_options(names: list[str], n_concepts: int) -> list[str]:
    """The options to try; ``generate`` batch sizes above the number of concepts all do the same, keep one."""
    out: list[str] = []
    seen_full = False
    for name in names:
        if name.startswith("generate-bs") and int(name.removeprefix("generate-bs")) >= n_concepts:
            if seen_full:
                continue
            seen_full = True
        out.append(name)
    return out


def max_rel_diff(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest ``max|a - b| / max|b|`` over the heatmaps (rows), each normalised by its own maximum."""
    if ours.shape != reference.shape:
        return float("inf")
    diff = (ours - reference).abs().flatten(1).amax(1)
    scale = reference.abs().flatten(1).amax(1).clamp(min=1e-30)
    return float((diff / scale).max())


# -- plain reference passes (case a) --------------------------------------------------------------------------------


def plain_forward(model: torch.nn.Module, data: torch.Tensor) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return model(data)

    return run


def plain_backward(model: torch.nn.Module, data: torch.Tensor, layer: str) -> Callable[[], Any]:
    """One input gradient of ``layer``'s output (plain autograd); the forward pass happens here, untimed."""
    captured: dict[str, torch.Tensor] = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, output: captured.__setitem__("out", output))
    data = data.clone().requires_grad_(True)
    try:
        model(data)
    finally:
        handle.remove()
    output = captured["out"]
    torch.manual_seed(1)
    grad_output = torch.randn_like(output)

    def run() -> Any:
        return torch.autograd.grad(output, data, grad_outputs=grad_output, retain_graph=True)[0]

    return run


# -- cases ----------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    key: str
    description: str
    target_speedup: float
    n_concepts: int
    n_images: int = 1
    marginal: bool = False


CASES = {
    "a": Case("a", "VGG16 random, 1x224x224, features.28, EpsilonPlusFlat", 4.0, 32, marginal=True),
    "b": Case("b", "VGG16 random, 1x224x224, features.10, EpsilonPlusFlat", 8.0, 32),
    "c": Case("c", "ResNet18 random, 1x224x224, layer4.1.conv2, EpsilonPlus+ResNetCanonizer", 3.0, 32),
    "d": Case("d", "FashionMNIST CNN, 64 images, conv2, EpsilonPlus+SequentialMergeBatchNorm", 3.0, 16, n_images=64),
}


def build_problem(key: str, args: argparse.Namespace, n_images: int) -> Problem:
    if key in ("a", "b"):
        layer = "features.28" if key == "a" else "features.10"
        return Problem(vgg16(), random_image(), layer, epsilon_plus_flat)
    if key == "c":
        return Problem(resnet18(), random_image(), "layer4.1.conv2", epsilon_plus_resnet)
    model = fashion_mnist.load_model(args.data_dir)
    return Problem(model, fashion_mnist.load_images(n_images, args.data_dir), "conv2", fashion_mnist.composite)


def run_case(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    n_concepts = args.concepts or (4 if args.quick else case.n_concepts)
    n_images = args.images or (8 if args.quick and case.n_images > 1 else case.n_images)
    repeats = args.repeats
    problem = build_problem(case.key, args, n_images)
    dtype = getattr(torch, args.dtype)
    problem.model.to(dtype)
    problem.data = problem.data.to(dtype)
    predict_and_rank(problem, n_concepts)
    channels = problem.channels
    log(f"[{case.key}] {case.description}: {problem.data.shape[0]} image(s), channels {channels}")

    # glocal warm-up (untimed), then each zennit-crp option once
    reference = run_glocal(problem, channels)
    options: dict[str, dict[str, float]] = {}
    for option in crp_options(args.crp_options, len(channels)):
        seconds, peak, heatmap = measure(lambda option=option: run_crp(problem, channels, option))
        options[option] = {
            "s": round(seconds, 4),
            "peak_mb": round(peak / MB, 1),
            "heatmap_max_rel_diff": max_rel_diff(reference, heatmap),
        }
        log(f"[{case.key}] zennit-crp {option}: {seconds:.3f} s, {peak / MB:.0f} MiB")
        del heatmap
    best = min(options, key=lambda name: options[name]["s"])

    glocal_runs, glocal_peaks, crp_runs, crp_peaks = [], [], [], []
    small_runs: list[float] = []
    n_small = max(1, len(channels) // 4)
    for _ in range(repeats):
        seconds, peak, _result = measure(lambda: run_glocal(problem, channels))
        glocal_runs.append(seconds)
        glocal_peaks.append(peak)
        if case.marginal and len(channels) > n_small:
            seconds, _peak, _result = measure(lambda: run_glocal(problem, channels[:n_small]))
            small_runs.append(seconds)
        seconds, peak, _result = measure(lambda: run_crp(problem, channels, best))
        crp_runs.append(seconds)
        crp_peaks.append(peak)
        log(f"[{case.key}] glocal {glocal_runs[-1]:.3f} s, zennit-crp ({best}) {crp_runs[-1]:.3f} s")

    glocal_s, crp_s = median(glocal_runs), median(crp_runs)
    row: dict[str, Any] = {
        "case": case.key,
        "description": case.description,
        "layer": problem.layer,
        "n_images": int(problem.data.shape[0]),
        "n_concepts": len(channels),
        "repeats": repeats,
        "dtype": args.dtype,
        "glocal_s": round(glocal_s, 4),
        "crp_s": round(crp_s, 4),
        **target_fields("speedup", crp_s / glocal_s, case.target_speedup, meets="meets_target"),
        "glocal_peak_mb": round(max(glocal_peaks) / MB, 1),
        "crp_peak_mb": round(max(crp_peaks) / MB, 1),
        "heatmap_max_rel_diff": max(o["heatmap_max_rel_diff"] for o in options.values()),
        "crp_option": best,
        "crp_options": options,
        "glocal_runs_s": rounded(glocal_runs),
        "crp_runs_s": rounded(crp_runs),
    }
    if case.marginal:
        row.update(marginal_costs(problem, len(channels), n_small, glocal_s, small_runs, repeats))
        row["glocal_peak_target_mb"] = 2048
    return row


def marginal_costs(
    problem: Problem, n_full: int, n_small: int, full_s: float, small_runs: list[float], repeats: int
) -> dict[str, Any]:
    forward = plain_forward(problem.model, problem.data)
    backward = plain_backward(problem.model, problem.data, problem.layer)
    forward()
    backward()
    reps = max(3, repeats)
    forward_s = median([measure(forward)[0] for _ in range(reps)])
    backward_s = median([measure(backward)[0] for _ in range(reps)])
    out: dict[str, Any] = {"forward_s": round(forward_s, 4), "backward_s": round(backward_s, 4)}
    if small_runs:
        small_s = median(small_runs)
        marginal = (full_s - small_s) / (n_full - n_small)
        out.update(
            {
                "marginal_from_concepts": [n_small, n_full],
                "glocal_small_s": round(small_s, 4),
                "marginal_s": round(marginal, 4),
                "marginal_over_backward": round(marginal / backward_s, 3),
                "marginal_target": 1.2,
            }
        )
    return out


# -- CLI ------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Arguments(__doc__, cases=CASES, repeats=3, quick="smoke run: 1 repeat, 4 concepts, 8 images in (d)")
    parser.add_argument("--concepts", type=int, default=None, help="override the number of concepts of every case")
    parser.add_argument("--images", type=int, default=None, help="override the number of images of case (d)")
    parser.add_argument(
        "--crp-options",
        default=",".join(CRP_OPTIONS),
        help=f"zennit-crp options to try, best one is timed (default: {','.join(CRP_OPTIONS)})",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="run models and data in this precision (float64: check that the heatmaps agree to round-off)",
    )
    args = parser.parse(argv, at_least_one=("concepts", "images"))
    args.crp_options = [o.strip() for o in args.crp_options.split(",") if o.strip()]
    bad = [o for o in args.crp_options if o != "call" and not (o.startswith("generate-bs") and o[11:].isdigit())]
    if bad or not args.crp_options:
        parser.error(f"bad --crp-options {bad}; use 'call' and/or 'generate-bsN'")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    emit_rows(args.threads, args.json_out, [lambda key=key: run_case(CASES[key], args) for key in args.cases])
    return 0


if __name__ == "__main__":
    sys.exit(main())
