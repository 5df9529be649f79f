"""The toy experiment of Yeom et al., "Pruning by Explaining" (Pattern Recognition 2021), rebuilt with glocal.pruning.

What the paper did (read from the paper and the authors' code, github.com/seulkiyeom/LRP_Pruning_toy_example:
``main.py``, ``modules/lrp.py``, the per-seed logs ``output/log.txt`` and ``output-noisytest-0.3/log.txt``)
---------------------------------------------------------------------------------------------------------------
* Data. ``moons``: ``sklearn.datasets.make_moons(noise=0.1)``; ``circles``: ``make_circles(noise=0.1,
  factor=0.3)``; ``mult``: a four-armed spiral (class ``j``: radius ``linspace(0, 1, N)``, angle ``linspace(4j,
  4(j+1), N) + 0.2 * randn(N)``, point ``(r sin t, r cos t)``), ``N`` points per class. The models were trained on
  fixed sets of 2000 (moons, circles) and 4000 (mult) points, 1000 per class (``data/*_train_X.npy``).
* Model. ``Linear(2, 1000) -> ReLU -> Dropout(0.5) -> Linear(1000, 1000) -> ReLU -> Linear(1000, 1000) -> ReLU
  -> Linear(1000, classes)``, trained with SGD (lr 0.001, momentum 0.9), full batch, 10000 epochs, cross-entropy;
  one trained model per data set, the same for all seeds. (In the released code the third ReLU is lost: two
  entries of its ``OrderedDict`` share the key ``nonlin2``, so ``linear3`` feeds the output layer directly. We keep
  the ReLU the paper describes.)
* Reference samples. Per seed ``s``, ``n`` fresh points from the same generator with ``random_state=s`` (mult:
  ``np.random.seed(s)``). ``n`` is the *total* count: the table's 10 / 2 (moons, circles) and 20 / 4 (mult) are 5
  and 1 per class (the authors' analysis divides ``n`` by the class count). With ``n = 4`` the mult generator puts
  all four points at the origin (``linspace(0, 1, 1) = [0]``), whatever the seed.
* Criteria, per hidden unit (the output of each of the three hidden ``Linear`` layers, before its ReLU): LRP: the
  relevance of the true class's logit, propagated with the z+ rule (positive weights, no bias) through every
  layer, summed over the reference samples (signed); Taylor: ``|sum_i a_i * dL/da_i| / n`` and gradient:
  ``|sum_i dL/da_i| / n`` with ``L`` the mean cross-entropy loss of the reference batch; weight: the L1 norm of the
  unit's incoming weights. Per layer, LRP and weight scores are divided by their sum, Taylor and gradient by their
  L2 norm; then the 1000 lowest of all 3000 units are removed at once (global ranking), no fine-tuning.
* Accuracy. The published table (the issue's numbers) is the pruned model's accuracy on the *training* set: the
  per-seed log ``output/log.txt`` averages to 99.86 / 84.76 / 86.17 / 99.60 (moons, n = 10, scenario ``train``)
  against the table's 99.8 / 84.8 / 86.0 / 99.8, and so on for every cell. The ``test`` scenario of that log is
  the reference samples themselves; a later revision adds a noisy test set (500 points, sigma 0.3).

What this script does
---------------------
The same data generators, sizes, architecture, reference counts and pruning amount (global, 1000 of 3000 units:
``prune_plan(scores, 1/3, scope="global")``), the pruning as masks (``glocal.pruning.masked``). Scores come from
``glocal.pruning.channel_scores`` on the three hidden ``Linear`` layers (removing a unit = zeroing that layer's
output channel, exactly what deleting the neuron does), targets = the reference samples' labels, the LRP rule z+
without bias (zennit ``ZPlus(zero_params=["bias"])`` on every ``Linear``; the inputs of every rule are ReLU
outputs, so this is the paper's rule; with ``--released`` the output layer's inputs can be negative, where zennit's
z+ also counts negative inputs times negative weights and the authors' does not). Two variants of the data criteria:

``glocal``
    the library's definitions: ``sum_i |score_i|`` per unit, each layer divided by its L1 sum;
``paper``
    as the authors: signed sums over the reference samples (``signed=True, normalise=False``), then the absolute
    value and per-layer division by the sum (LRP) or the L2 norm (Taylor, gradient), put back into a
    ``ChannelScores``. One difference stays: glocal's gradient and Taylor criteria differentiate the target logit,
    the authors' differentiate the cross-entropy loss (``dL/da = sum_k (p_k - [k = t]) dy_k/da`` over the batch).

Weight scores need no data: one value per data set (std 0 over seeds, as in the paper).

Differences that remain: our models are trained with Adam (lr 1e-3, mini-batches of 100, ``--epochs``) instead of
10000 full-batch SGD epochs (that is ~240 TFLOP per model, hours on two shared cores); the training sets are drawn by
us with a fixed seed (the authors' files are not regenerable: their seed is unknown). We report the accuracy on the
training set (what the paper's table shows) and on a fresh test set of 1000 points per class (seed 10_000).

Output: the ``"machine"`` line, one JSON line per (data set, reference count, variant, criterion) with the mean and
std over seeds (population std), the per-seed values and the published number; ``--table`` also prints a markdown
table on stderr. ``--budget-s`` runs whole seeds (every cell) until the time is used up (at least one).

Usage::

    .venv/bin/python benchmarks/toy_pruning.py --budget-s 600 --json-out benchmarks/results-toy-pruning.jsonl
    .venv/bin/python benchmarks/toy_pruning.py --released --datasets moons   # the released code's model, moons only
    .venv/bin/python benchmarks/toy_pruning.py --quick      # smoke run: 1 seed, 2 epochs
"""

from __future__ import annotations

import os
import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.datasets import make_circles, make_moons
from zennit.composites import LayerMapComposite
from zennit.rules import ZPlus

from common import Arguments, json_lines, log, machine, rounded, set_threads
from glocal.pruning import ChannelScores, channel_scores, masked, prune_plan

LAYERS = ("linear1", "linear2", "linear3")
HIDDEN = 1000
RATE = 1 / 3  # 1000 of the 3000 hidden units
CRITERIA = ("relevance", "taylor", "gradient", "weight")
PAPER_NAMES = {"relevance": "LRP", "taylor": "Taylor", "gradient": "gradient", "weight": "weight"}

# data set -> (classes, training points, reference counts (total, as in the table))
DATASETS: dict[str, tuple[int, int, tuple[int, int]]] = {
    "moons": (2, 2000, (10, 2)),
    "circles": (2, 2000, (10, 2)),
    "mult": (4, 4000, (20, 4)),
}

# Yeom et al. 2021, accuracy (%) after pruning 1000 of 3000 units: data set -> reference count -> criterion
PUBLISHED: dict[str, dict[int, dict[str, float]]] = {
    "moons": {
        10: {"relevance": 99.8, "taylor": 84.8, "gradient": 86.0, "weight": 99.8},
        2: {"relevance": 84.9, "taylor": 79.8, "gradient": 83.0, "weight": 99.8},
    },
    "circles": {
        10: {"relevance": 99.9, "taylor": 87.2, "gradient": 82.4, "weight": 96.9},
        2: {"relevance": 70.4, "taylor": 68.5, "gradient": 69.5, "weight": 96.9},
    },
    "mult": {
        20: {"relevance": 90.6, "taylor": 75.9, "gradient": 66.6, "weight": 90.4},
        4: {"relevance": 62.7, "taylor": 33.4, "gradient": 33.4, "weight": 90.4},
    },
}
PUBLISHED_UNPRUNED = {"moons": 99.9, "circles": 99.9, "mult": 93.4}

TRAIN_SEED = 12345  # the training set and the model's initialisation
TEST_SEED = 10_000


# -- data and model -------------------------------------------------------------------------------------------------


def spiral(points: int, seed: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The authors' "mult" data: ``classes`` spiral arms of ``points // classes`` points each."""
    rng = np.random.RandomState(seed)  # the legacy stream, as np.random.seed(seed) + np.random.randn
    per_class = points // classes
    xs, ys = [], []
    for j in range(classes):
        radius = np.linspace(0.0, 1.0, per_class)
        angle = np.linspace(4 * j, 4 * (j + 1), per_class) + rng.randn(per_class) * 0.2
        xs.append(np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1))
        ys.append(np.full(per_class, j))
    return np.concatenate(xs), np.concatenate(ys)


def make_data(name: str, points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``points`` samples of data set ``name`` drawn with ``seed``: float32 ``(N, 2)``, int64 ``(N,)``."""
    if name == "moons":
        x, y = make_moons(n_samples=points, noise=0.1, random_state=seed)
    elif name == "circles":
        x, y = make_circles(n_samples=points, noise=0.1, factor=0.3, random_state=seed)
    else:
        x, y = spiral(points, seed)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def toy_net(classes: int, released: bool = False) -> torch.nn.Sequential:
    """2 -> 1000 -> 1000 -> 1000 -> classes, ReLU, dropout after the first layer (as the authors' model);
    ``released``: without the third ReLU, as the authors' released code builds it."""
    modules = [
        ("linear1", torch.nn.Linear(2, HIDDEN)),
        ("relu1", torch.nn.ReLU()),
        ("dropout", torch.nn.Dropout(0.5)),
        ("linear2", torch.nn.Linear(HIDDEN, HIDDEN)),
        ("relu2", torch.nn.ReLU()),
        ("linear3", torch.nn.Linear(HIDDEN, HIDDEN)),
        ("relu3", torch.nn.ReLU()),
        ("output", torch.nn.Linear(HIDDEN, classes)),
    ]
    return torch.nn.Sequential(OrderedDict(m for m in modules if not (released and m[0] == "relu3")))


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> torch.nn.Module:
    """Adam (lr 1e-3), mini-batches of 100, ``epochs`` passes; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 100):
            batch = order[start : start + 100]
            optimiser.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    return model


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean()) * 100


def zplus() -> LayerMapComposite:
    """z+ without bias on every linear layer: the authors' LRP rule."""
    return LayerMapComposite(layer_map=[(torch.nn.Linear, ZPlus(zero_params=["bias"]))])


# -- scores ---------------------------------------------------------------------------------------------------------


def scores_for(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: str, variant: str) -> ChannelScores:
    """Channel scores of the three hidden layers on the reference samples ``x`` (labels ``y``)."""
    common = {"criterion": criterion, "targets": y.tolist(), "progress": False, "batch_size": len(x)}
    if criterion == "relevance":
        common["composite"] = zplus()
    if variant == "glocal" or criterion == "weight":
        return channel_scores(model, x, list(LAYERS), **common)
    raw = channel_scores(model, x, list(LAYERS), signed=True, normalise=False, **common)
    scores = {}
    for name, values in raw.scores.items():
        values = values.abs()
        norm = float(values.sum()) if criterion == "relevance" else float(values.norm())
        scores[name] = values / norm if norm > 0 else values
    return ChannelScores(criterion, scores, raw.samples, raw.classes, True, True)


def pruned_accuracy(
    model: torch.nn.Module, scores: ChannelScores, evaluations: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, float]:
    plan = prune_plan(scores, RATE, scope="global")
    with masked(model, plan, evaluations["train"][0][:1]) as pruned:
        return {name: accuracy(pruned, x, y) for name, (x, y) in evaluations.items()}


# -- the experiment -------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    name: str
    model: torch.nn.Module
    evaluations: dict[str, tuple[torch.Tensor, torch.Tensor]]
    unpruned: dict[str, float]
    weight: dict[str, float]
    train_s: float


def prepare(name: str, epochs: int, released: bool) -> Setup:
    classes, points, _ = DATASETS[name]
    x, y = make_data(name, points, TRAIN_SEED)
    torch.manual_seed(TRAIN_SEED)
    start = time.perf_counter()
    model = train(toy_net(classes, released), x, y, epochs, TRAIN_SEED)
    train_s = time.perf_counter() - start
    evaluations = {"train": (x, y), "test": make_data(name, 1000 * classes, TEST_SEED)}
    unpruned = {key: accuracy(model, *data) for key, data in evaluations.items()}
    weight = pruned_accuracy(model, scores_for(model, x[:1], y[:1], "weight", "glocal"), evaluations)
    log(f"{name}: trained in {train_s:.0f} s, unpruned accuracy {unpruned}, weight-pruned {weight}")
    return Setup(name, model, evaluations, unpruned, weight, train_s)


def run_seed(setup: Setup, seed: int, variants: tuple[str, ...]) -> dict[tuple[int, str, str], dict[str, float]]:
    """Every (reference count, variant, data criterion) of one seed: accuracies after pruning."""
    results = {}
    for count in DATASETS[setup.name][2]:
        x, y = make_data(setup.name, count, seed)
        for variant in variants:
            for criterion in CRITERIA[:-1]:
                scores = scores_for(setup.model, x, y, criterion, variant)
                results[(count, variant, criterion)] = pruned_accuracy(setup.model, scores, setup.evaluations)
    return results


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 2), "std": round(statistics.pstdev(values), 2)}


def rows(
    setups: list[Setup], per_seed: dict[str, list[dict[Any, dict[str, float]]]], variants: tuple[str, ...]
) -> list[dict[str, Any]]:
    out = []
    for setup in setups:
        seeds = per_seed[setup.name]
        out.append(
            {
                "dataset": setup.name,
                "criterion": "unpruned",
                "train_accuracy": round(setup.unpruned["train"], 2),
                "test_accuracy": round(setup.unpruned["test"], 2),
                "published": PUBLISHED_UNPRUNED[setup.name],
                "train_s": round(setup.train_s, 1),
            }
        )
        for count in DATASETS[setup.name][2]:
            out.append(
                {
                    "dataset": setup.name,
                    "references": count,
                    "variant": "both",
                    "criterion": "weight",
                    "seeds": len(seeds),
                    "train_accuracy": {"mean": round(setup.weight["train"], 2), "std": 0.0},
                    "test_accuracy": {"mean": round(setup.weight["test"], 2), "std": 0.0},
                    "published": PUBLISHED[setup.name][count]["weight"],
                }
            )
            for variant in variants:
                for criterion in CRITERIA[:-1]:
                    train = [seed[(count, variant, criterion)]["train"] for seed in seeds]
                    test = [seed[(count, variant, criterion)]["test"] for seed in seeds]
                    out.append(
                        {
                            "dataset": setup.name,
                            "references": count,
                            "variant": variant,
                            "criterion": criterion,
                            "seeds": len(seeds),
                            "train_accuracy": summary(train),
                            "test_accuracy": summary(test),
                            "published": PUBLISHED[setup.name][count][criterion],
                            "train_accuracy_per_seed": rounded(train, 2),
                        }
                    )
    return out


def table(result_rows: list[dict[str, Any]], variants: tuple[str, ...]) -> str:
    """Markdown: one line per (data set, reference count, variant), criteria as columns, training-set accuracy."""
    header = "| data | refs | criteria | " + " | ".join(PAPER_NAMES[c] for c in CRITERIA) + " |"
    lines = [header, "|" + "---|" * (3 + len(CRITERIA))]
    index = {(r["dataset"], r.get("references"), r.get("variant"), r["criterion"]): r for r in result_rows}
    for name in dict.fromkeys(r["dataset"] for r in result_rows):
        unpruned = index[(name, None, None, "unpruned")]
        lines.append(
            f"| {name} | - | unpruned: ours / paper | {unpruned['train_accuracy']:.1f} / {unpruned['published']:.1f}"
            + " |" * len(CRITERIA)
        )
        for count in DATASETS[name][2]:
            published = " | ".join(f"{PUBLISHED[name][count][c]:.1f}" for c in CRITERIA)
            lines.append(f"| {name} | {count} | paper | {published} |")
            for variant in variants:
                cells = []
                for criterion in CRITERIA:
                    row = index[(name, count, "both" if criterion == "weight" else variant, criterion)]
                    value = row["train_accuracy"]
                    cells.append(f"{value['mean']:.1f} ± {value['std']:.1f}")
                lines.append(f"| {name} | {count} | glocal, {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Arguments(__doc__, quick="smoke run: 1 seed, 2 epochs", threads=1, data_dir=False)
    parser.add_argument("--seeds", type=int, default=50, help="at most this many seeds (default 50, the paper's)")
    parser.add_argument("--budget-s", type=float, default=600.0, help="stop starting seeds after this (default 600)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs per model (default 30)")
    parser.add_argument("--datasets", default="moons,circles,mult", help="comma-separated data sets (default all)")
    parser.add_argument("--variants", default="glocal,paper", help="comma-separated: glocal, paper (default both)")
    parser.add_argument(
        "--released", action="store_true", help="the released code's model: no ReLU after the third hidden layer"
    )
    parser.add_argument("--table", action="store_true", help="print a markdown table on stderr")
    args = parser.parse(argv, at_least_one=["seeds", "epochs"])
    if args.quick:
        args.seeds, args.epochs = 1, 2
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not names or any(d not in DATASETS for d in names):
        parser.error(f"--datasets must be a selection of {sorted(DATASETS)}, got {args.datasets!r}")
    set_threads(args.threads)
    with json_lines(args.json_out) as emit:
        emit(machine())
        started = time.perf_counter()
        setups = [prepare(name, args.epochs, args.released) for name in names]
        per_seed: dict[str, list[dict[Any, dict[str, float]]]] = {name: [] for name in names}
        seed_times = []
        load = [round(os.getloadavg()[0], 2)]
        for seed in range(args.seeds):
            seed_start = time.perf_counter()
            for setup in setups:
                per_seed[setup.name].append(run_seed(setup, seed, variants))
            seed_times.append(time.perf_counter() - seed_start)
            log(f"seed {seed} done in {seed_times[-1]:.1f} s")
            elapsed = time.perf_counter() - started
            if elapsed + statistics.fmean(seed_times) > args.budget_s:
                break
        load.append(round(os.getloadavg()[0], 2))
        result_rows = rows(setups, per_seed, variants)
        for row in result_rows:
            emit(row)
        emit(
            {
                "summary": "toy_pruning",
                "seeds": len(seed_times),
                "epochs": args.epochs,
                "released_architecture": args.released,
                "seconds": round(time.perf_counter() - started, 1),
                "seconds_per_seed": round(statistics.fmean(seed_times), 1),
                "load_avg": load,
            }
        )
        if args.table:
            log(table(result_rows, variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
