"""Layer-by-layer conservation of LRP composites on the real MobileNetV2, side by side.

What is measured
----------------
For each photo (``skimage.data``, centre-cropped and normalised as in ``glocal.demo``), the logit of the predicted
class is explained with each candidate composite (zennit's hooks, one forward and one backward pass). The relevance
arriving at the output of each block (``features.0`` ... ``features.18``), at the classifier's input
(``classifier.0``, the pooled features) and at the input pixels is summed and divided by the explained logit:
``1.0`` means everything arrived, ``0.01`` that 99 % was absorbed on the way (by biases or stabilisers).

Per photo and candidate also:

* ``finite``: no NaN or infinity anywhere; ``abs_ratio = sum |R_input| / |logit|``; in the summary also
  ``cancellation = sum |R_input| / |sum R_input|``: 1 when the heatmap has one sign, far above 1 when it is mostly
  positive and negative values that cancel (noise);
* ``class_cos``: cosine similarity of the input heatmap (summed over colour channels) of the predicted class with
  that of the second-ranked class and of the class ranked 500th (1.0 = the heatmaps do not depend on the class);
* ``channel_cos``: mean pairwise cosine similarity of the conditional heatmaps of the six most relevant channels of
  ``features.14`` (1.0 = every concept looks alike);
* ``channel_share``: the six channels' share of the relevance arriving at ``features.14``.

Output: one JSON object per (candidate, photo) on stdout, then one summary line per candidate with the medians over
the photos; ``--png`` also writes a grid of heatmaps (photos x candidates) to look at, ``--markdown`` the medians as
a table (``--from-jsonl`` prints that table from an earlier run's lines).

Usage::

    .venv/bin/python benchmarks/conservation.py --threads 1 --json-out benchmarks/results-conservation.jsonl \\
        --png conservation.png --markdown
    .venv/bin/python benchmarks/conservation.py --candidates epsilon-gamma-box glocal-mobilenet-v2 --photos chelsea
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import zennit.core
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat, SpecialFirstLayerMapComposite
from zennit.layer import Sum
from zennit.rules import Epsilon, Gamma, Norm, Pass, ZBox, ZPlus
from zennit.types import Activation, AvgPool, Convolution

from common import Arguments, json_lines, log, set_threads
from glocal.demo import load_model, load_photos, normalise
from glocal.lrp.bias_rules import BiasFreeGamma, BiasFreeZBox, BiasFreeZPlus
from glocal.lrp.canonizers import MobileNetV2Canonizer

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")
LAYERS = (*(f"features.{i}" for i in range(19)), "classifier.0")
CONCEPT_LAYER = "features.14"
CHANNELS = 6


def bounds() -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest normalised pixel values, ``(1, 3, 1, 1)`` each."""
    return normalise(torch.zeros(1, 3, 1, 1)), normalise(torch.ones(1, 3, 1, 1))


def _layer_map(conv: zennit.core.Hook, linear: zennit.core.Hook) -> list[tuple[Any, zennit.core.Hook]]:
    return [(Activation, Pass()), (Sum, Norm()), (AvgPool, Norm()), (Convolution, conv), (torch.nn.Linear, linear)]


def _composite(first: zennit.core.Hook, conv: zennit.core.Hook, linear: zennit.core.Hook) -> zennit.core.Composite:
    return SpecialFirstLayerMapComposite(
        layer_map=_layer_map(conv, linear),
        first_map=[(Convolution, first)],
        canonizers=[MobileNetV2Canonizer()],
    )


def candidates() -> dict[str, Callable[[], zennit.core.Composite]]:
    """The composites compared, by name (each with glocal's MobileNetV2 canonizer: merged batch norms, Sum and
    pooling modules)."""
    low, high = bounds()
    canon = [MobileNetV2Canonizer()]
    from glocal.lrp.bias_rules import mobilenet_v2_composite

    return {
        # the demo's composite before this change: biases take their share at every layer
        "epsilon-gamma-box": lambda: EpsilonGammaBox(low=low, high=high, canonizers=canon),
        # a gamma that outweighs the bias (the bias's positive part still counts as a positive contribution)
        "gamma-1": lambda: EpsilonGammaBox(low=low, high=high, gamma=1.0, canonizers=canon),
        "gamma-10": lambda: EpsilonGammaBox(low=low, high=high, gamma=10.0, canonizers=canon),
        # z+ with the bias's positive part in the denominator (zennit's ZPlus), flat first layer
        "epsilon-plus-flat": lambda: EpsilonPlusFlat(canonizers=canon),
        "zplus-box": lambda: _composite(ZBox(low, high), ZPlus(), Epsilon()),
        # a larger epsilon on the convolutions: a stabiliser that absorbs even more
        "epsilon-0.25": lambda: _composite(ZBox(low, high), Epsilon(0.25), Epsilon()),
        # zennit's own bias switch: the bias leaves the terms, but the Gamma branch still follows the biased output
        "zennit-zero-bias": lambda: EpsilonGammaBox(low=low, high=high, zero_params=["bias"], canonizers=canon),
        # zennit's Gamma with the bias only out of the convolutions (classifier keeps it)
        "zennit-gamma-no-conv-bias": lambda: _composite(
            ZBox(low, high, zero_params=["bias"]), Gamma(0.25, zero_params=["bias"]), Epsilon()
        ),
        # bias-free rules of glocal.lrp.bias_rules
        "bias-free-zplus": lambda: _composite(BiasFreeZBox(low, high), BiasFreeZPlus(), Epsilon()),
        "bias-free-gamma-0.25": lambda: _composite(BiasFreeZBox(low, high), BiasFreeGamma(0.25), Epsilon()),
        "bias-free-gamma-0.5": lambda: _composite(BiasFreeZBox(low, high), BiasFreeGamma(0.5), Epsilon()),
        "bias-free-gamma-1": lambda: _composite(BiasFreeZBox(low, high), BiasFreeGamma(1.0), Epsilon()),
        "bias-free-gamma-2": lambda: _composite(BiasFreeZBox(low, high), BiasFreeGamma(2.0), Epsilon()),
        "bias-free-gamma-4": lambda: _composite(BiasFreeZBox(low, high), BiasFreeGamma(4.0), Epsilon()),
        # ... and a neuron without input contributions spreads its relevance evenly over its receptive field
        "bias-free-gamma-1-flat-fallback": lambda: _composite(
            BiasFreeZBox(low, high), BiasFreeGamma(1.0, flat_fallback=True), Epsilon()
        ),
        # glocal's MobileNetV2 default (the same rules as the line above, from glocal.lrp.bias_rules)
        "glocal-mobilenet-v2": lambda: mobilenet_v2_composite(low, high),
    }


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float((a @ b) / (a.norm() * b.norm()).clamp(min=1e-30))


def measure(
    model: torch.nn.Module, composite: zennit.core.Composite, images: torch.Tensor
) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Per photo: the fractions of the logit arriving at each layer and at the input, and the health and
    discriminativeness figures; also the input heatmaps of the predicted class, ``(N, H, W)``."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name in LAYERS
    ]
    x = images.clone().requires_grad_(True)
    try:
        with composite.context(model) as modified:
            logits = modified(x)
            order = logits.detach().argsort(1, descending=True)
            rows = torch.arange(len(x))

            def relevance_for(classes: torch.Tensor, layers: tuple[str, ...] = ()) -> list[torch.Tensor]:
                start = torch.zeros_like(logits)
                start[rows, classes] = logits.detach()[rows, classes]
                tensors = [x, *(captured[name] for name in layers)]
                return list(torch.autograd.grad(logits, tensors, start, retain_graph=True))

            top, second, far = order[:, 0], order[:, 1], order[:, 500]
            grads = relevance_for(top, LAYERS)
            heatmap, arriving = grads[0], dict(zip(LAYERS, grads[1:], strict=True))
            heat_second = relevance_for(second)[0]
            heat_far = relevance_for(far)[0]
            concept = arriving[CONCEPT_LAYER]
            per_channel = concept.flatten(2).sum(2)
            channels = per_channel.argsort(1, descending=True)[:, :CHANNELS]
            conditional = []
            for k in range(CHANNELS):
                mask = torch.zeros_like(concept)
                mask[rows, channels[:, k]] = 1
                conditional.append(
                    torch.autograd.grad(captured[CONCEPT_LAYER], x, concept * mask, retain_graph=True)[0].sum(1)
                )
    finally:
        for hook in hooks:
            hook.remove()
    results = []
    for n in range(len(x)):
        logit = float(logits.detach()[n, top[n]])
        fractions = {name: float(arriving[name][n].sum()) / logit for name in LAYERS}
        fractions["input"] = float(heatmap[n].sum()) / logit
        tensors = [heatmap[n], heat_second[n], heat_far[n], *(arriving[name][n] for name in LAYERS)]
        pairs = [_cos(conditional[i][n], conditional[j][n]) for i in range(CHANNELS) for j in range(i + 1, CHANNELS)]
        results.append(
            {
                "class": int(top[n]),
                "logit": logit,
                "fractions": fractions,
                "finite": all(bool(torch.isfinite(t).all()) for t in tensors),
                "abs_ratio": float(heatmap[n].abs().sum()) / abs(logit),
                "class_cos_second": _cos(heatmap[n].sum(0), heat_second[n].sum(0)),
                "class_cos_500th": _cos(heatmap[n].sum(0), heat_far[n].sum(0)),
                "channel_cos": statistics.fmean(pairs),
                "channel_share": float(per_channel[n, channels[n]].sum() / per_channel[n].sum()),
            }
        )
    return results, heatmap.detach().sum(1)


def _median(values: list[float]) -> float:
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    return statistics.median(finite) if len(finite) == len(values) else float("nan")


def summarise(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over photos of every figure."""
    keys = [*LAYERS, "input"]
    return {
        "summary": name,
        "photos": len(rows),
        "finite": all(row["finite"] for row in rows),
        "fractions": {key: _median([row["fractions"][key] for row in rows]) for key in keys},
        **{
            key: _median([row[key] for row in rows])
            for key in ("abs_ratio", "class_cos_second", "class_cos_500th", "channel_cos", "channel_share")
        },
        "cancellation": _median([row["abs_ratio"] / max(abs(row["fractions"]["input"]), 1e-30) for row in rows]),
    }


def save_grid(
    path: Path,
    images: torch.Tensor,
    heatmaps: dict[str, torch.Tensor],
    names: list[str],
    kept: dict[str, list[float]] | None = None,
) -> None:
    """Photos in the first column, one column of heatmaps per candidate (red positive, blue negative, each heatmap
    scaled to its own largest magnitude), each labelled with the share of the logit it keeps (``kept``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + len(heatmaps)
    figure, axes = plt.subplots(len(names), columns, figsize=(2.2 * columns, 2.3 * len(names)), squeeze=False)
    for row, photo in enumerate(names):
        axes[row, 0].imshow(images[row].permute(1, 2, 0).numpy())
        axes[row, 0].set_title(photo, fontsize=9)
        for column, (candidate, maps) in enumerate(heatmaps.items(), start=1):
            heat = maps[row]
            scale = float(heat.abs().max()) or 1.0
            axes[row, column].imshow(heat.numpy(), cmap="bwr", vmin=-scale, vmax=scale)
            if row == 0:
                axes[row, column].set_title(candidate, fontsize=8)
            if kept is not None:
                axes[row, column].set_xlabel(f"keeps {kept[candidate][row]:.2%} of the logit", fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def markdown(summaries: list[dict[str, Any]]) -> str:
    """The medians as a Markdown table: one row per candidate, one column per layer (input first)."""
    keys = ["input", *(f"features.{i}" for i in (0, 2, 4, 7, 11, 14, 16, 17, 18)), "classifier.0"]
    head = ["candidate", *(key.replace("features.", "f") for key in keys), "finite", "cancel", "cos 500", "concept cos"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summaries:
        cells = [row["summary"], *(f"{row['fractions'][key]:.3g}" for key in keys), "yes" if row["finite"] else "no"]
        cells += [f"{row[key]:.2f}" for key in ("cancellation", "class_cos_500th", "channel_cos")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Arguments(__doc__, threads=1, data_dir=False)
    parser.add_argument("--candidates", nargs="+", default=None, help="candidate names (default: all)")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), help="skimage.data photos")
    parser.add_argument("--png", type=Path, default=None, help="write the heatmap grid to this PNG file")
    parser.add_argument("--markdown", action="store_true", help="print the medians as a Markdown table on stderr")
    parser.add_argument("--from-jsonl", type=Path, default=None, help="only print the table of earlier results")
    return parser.parse(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_jsonl:
        rows = [json.loads(line) for line in args.from_jsonl.read_text().splitlines() if line.strip()]
        names = list(dict.fromkeys(row["candidate"] for row in rows if "candidate" in row))
        print(markdown([summarise(name, [row for row in rows if row.get("candidate") == name]) for name in names]))
        return 0
    set_threads(args.threads)
    model = load_model()[0]
    raw = load_photos(args.photos)
    images = normalise(raw)
    available = candidates()
    names = args.candidates or list(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        log(f"unknown candidates {unknown}; choose from {list(available)}")
        return 2
    lines: list[dict[str, Any]] = []
    heatmaps: dict[str, torch.Tensor] = {}
    kept: dict[str, list[float]] = {}
    for name in names:
        start = time.perf_counter()
        rows, heatmaps[name] = measure(model, available[name](), images)
        kept[name] = [row["fractions"]["input"] for row in rows]
        for photo, row in zip(args.photos, rows, strict=True):
            lines.append({"candidate": name, "photo": photo, **row})
        lines.append(summarise(name, rows))
        log(f"{name}: {time.perf_counter() - start:.1f} s")
    with json_lines(args.json_out) as emit:
        for line in lines:
            emit(line)
    if args.markdown:
        log(markdown([line for line in lines if "summary" in line]))
    if args.png:
        save_grid(args.png, raw, heatmaps, list(args.photos), kept)
    return 0


if __name__ == "__main__":
    sys.exit(main())
