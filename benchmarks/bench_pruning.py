"""Scoring channels by CRP relevance costs one pass over the data: glocal against the loops a user would write.

What is measured
----------------
The relevance criterion of concept pruning: for every channel ``c`` of the chosen layers of the trained FashionMNIST
model, ``sum_i |R_ic|``, the absolute relevance of channel ``c`` (summed over its positions) for each image's label,
summed over the images, under the model's composite ``EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])``.

* glocal: ``glocal.pruning.channel_scores(model, data, layers, criterion="relevance")``: one forward and one LRP
  backward per batch for all layers and channels together.
* zennit-crp, one pass: ``CondAttribution(model)(x, [{"y": [label_i]}], composite, record_layer=layers)`` per batch,
  the recorded relevances summed by hand (what a user who knows ``record_layer`` writes).
* zennit-crp, per channel: the plain loop, one ``CondAttribution`` call per channel and batch, conditioned on that
  channel (``{"y": [label_i], layer: [c]}``), reading channel ``c``'s relevance at the layer. It passes
  ``exclude_parallel=False``: with zennit-crp 0.6.0's default ``True`` the relevance it records at the conditioned
  layer itself is exactly twice the relevance there (seen on a plain conv net as well; the heatmaps are not
  affected), and the paths below the layer do not matter for the relevance at it.

Each side reads the same batches (``--batch-size``). A run's time covers everything: building the attributor, the
passes and the sums. The sides alternate run by run, after one untimed warm-up each on one batch; the per-channel loop
runs ``--loop-repeats`` times (default 1: it is the slow side). ``scores_max_rel_diff`` is the largest
``|s_glocal - s_other| / max |s_other|`` over layers: float32 round-off when the scores agree.

Reading the output
------------------
One JSON line per case after the ``"machine"`` line: ``glocal_s``, ``crp_one_pass_s``, ``crp_per_channel_s``
(medians), ``one_pass_over_glocal`` and ``per_channel_over_glocal`` (time ratios: how many times faster glocal is),
the images, layers and channels, and the score differences.

Usage: ``python benchmarks/bench_pruning.py --threads 1 [--images 1000] [--repeats 3]``
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

import fashion_mnist
from common import Arguments, LabelledImages, emit_rows, log, median, rounded, timed
from glocal.pruning import channel_scores

CASES = {"a": "FashionMNIST CNN, layers conv1 and conv2 (32 channels)"}
LAYERS = ("conv1", "conv2")


def crp_attribution(model: torch.nn.Module) -> Any:
    from crp.attribution import CondAttribution

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CondAttribution(model)


def crp_one_pass(model: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, list[int]]]) -> dict[str, torch.Tensor]:
    attribution = crp_attribution(model)
    totals: dict[str, torch.Tensor] = {}
    for images, labels in batches:
        result = attribution(
            images.clone().requires_grad_(True),
            [{"y": [label]} for label in labels],
            fashion_mnist.composite(),
            record_layer=list(LAYERS),
        )
        for name in LAYERS:
            per_sample = result.relevances[name].flatten(2).sum(-1).abs().double().sum(0)
            totals[name] = totals[name] + per_sample if name in totals else per_sample
    return totals


def crp_per_channel(
    model: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, list[int]]], channels: dict[str, int]
) -> dict[str, torch.Tensor]:
    attribution = crp_attribution(model)
    totals = {name: torch.zeros(count, dtype=torch.float64) for name, count in channels.items()}
    for name, count in channels.items():
        for c in range(count):
            for images, labels in batches:
                result = attribution(
                    images.clone().requires_grad_(True),
                    [{"y": [label], name: [c]} for label in labels],
                    fashion_mnist.composite(),
                    record_layer=[name],
                    exclude_parallel=False,
                )
                totals[name][c] += float(result.relevances[name][:, c].flatten(1).sum(-1).abs().double().sum())
    return totals


def glocal_scores(model: torch.nn.Module, dataset: LabelledImages, batch_size: int) -> dict[str, torch.Tensor]:
    scores = channel_scores(
        model,
        dataset,
        list(LAYERS),
        composite=fashion_mnist.composite(),
        targets="label",
        normalise=False,
        batch_size=batch_size,
        progress=False,
    )
    return dict(scores.scores)


def difference(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> float:
    return max(float((ours[n] - theirs[n]).abs().max() / theirs[n].abs().max()) for n in LAYERS)


def run_case(args: Any) -> dict[str, Any]:
    count = args.images or (64 if args.quick else 1000)
    model = fashion_mnist.load_model(args.data_dir)
    images = fashion_mnist.load_images(count, args.data_dir)
    labels = fashion_mnist.load_labels(count, args.data_dir)
    dataset = LabelledImages(images, labels)
    batches = [
        (images[start : start + args.batch_size], labels[start : start + args.batch_size].tolist())
        for start in range(0, count, args.batch_size)
    ]
    channels = {"conv1": model.conv1.out_channels, "conv2": model.conv2.out_channels}
    sides: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
        "glocal": lambda: glocal_scores(model, dataset, args.batch_size),
        "crp_one_pass": lambda: crp_one_pass(copy.deepcopy(model), batches),
    }
    log(f"case a: {count} images, warm-up")
    glocal_scores(model, LabelledImages(images[: args.batch_size], labels[: args.batch_size]), args.batch_size)
    crp_one_pass(copy.deepcopy(model), batches[:1])
    times: dict[str, list[float]] = {name: [] for name in [*sides, "crp_per_channel"]}
    results: dict[str, dict[str, torch.Tensor]] = {}
    for repeat in range(args.repeats):
        for name, side in sides.items():
            seconds, results[name] = timed(side)
            times[name].append(seconds)
            log(f"  run {repeat + 1}: {name} {seconds:.2f} s")
    for repeat in range(args.loop_repeats):
        seconds, results["crp_per_channel"] = timed(lambda: crp_per_channel(copy.deepcopy(model), batches, channels))
        times["crp_per_channel"].append(seconds)
        log(f"  run {repeat + 1}: crp_per_channel {seconds:.2f} s")
    glocal_s = median(times["glocal"])
    return {
        "case": "a",
        "description": CASES["a"],
        "images": count,
        "batch_size": args.batch_size,
        "layers": list(LAYERS),
        "channels": sum(channels.values()),
        "glocal_s": round(glocal_s, 4),
        "crp_one_pass_s": round(median(times["crp_one_pass"]), 4),
        "crp_per_channel_s": round(median(times["crp_per_channel"]), 4),
        "one_pass_over_glocal": round(median(times["crp_one_pass"]) / glocal_s, 2),
        "per_channel_over_glocal": round(median(times["crp_per_channel"]) / glocal_s, 2),
        "runs_s": {name: rounded(values) for name, values in times.items()},
        "scores_max_rel_diff": {
            "crp_one_pass": difference(results["glocal"], results["crp_one_pass"]),
            "crp_per_channel": difference(results["glocal"], results["crp_per_channel"]),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = Arguments(__doc__, cases=CASES, repeats=3, quick="smoke run: 64 images", threads=1)
    parser.add_argument("--images", type=int, default=None, help="images to score (default 1000)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per batch on every side (default 50)")
    parser.add_argument("--loop-repeats", type=int, default=1, help="timed runs of the per-channel loop (default 1)")
    args = parser.parse(argv, at_least_one=("images", "batch_size", "loop_repeats"))
    emit_rows(args.threads, args.json_out, [lambda: run_case(args)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
