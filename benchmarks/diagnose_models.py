"""``glocal.diagnose`` on real models, each under the composite glocal picks (``"auto"``) and under plain ones.

What is measured
----------------
Per case (a model, its data and a composite): the kept fraction of the target logits (the heatmaps' sum over the
logits, over all samples, and its range per sample), the number of findings of each kind, the findings that change
the most relevance (where, kind, change as a fraction of the logits, in/out), the completeness of the default layers
(relevance arriving at the layer, deviation of the channels' summed heatmaps from the heatmap), and the seconds the
diagnosis took. These are the numbers of ``docs/diagnose.md``.

Cases: MobileNetV2 with ImageNet weights on five ``skimage.data`` photos (``auto``; zennit's ``EpsilonPlusFlat``
without canonizers; ``EpsilonGammaBox`` with ``MobileNetV2Canonizer``; ``"auto"``'s composite without the ``Pass``
rule for the ReLU6s), torchvision's ResNet18 with random weights (seed 0) on the same photos (``auto``;
``EpsilonPlusFlat`` with and without ``ResNetCanonizer``), the FashionMNIST CNN on 64 validation images (``auto``;
``EpsilonPlus`` with ``SequentialMergeBatchNorm``, the benchmarks' composite; ``EpsilonPlus`` alone), the MNIST CNN
on 64 digits (``auto``; ``EpsilonPlus``). Targets: the labels where the data has them (FashionMNIST, MNIST), else
the predictions.

Usage::

    .venv/bin/python benchmarks/diagnose_models.py --threads 1 --json-out benchmarks/results-diagnose.jsonl
    .venv/bin/python benchmarks/diagnose_models.py --cases resnet18-bare,resnet18-canonizer
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat
from zennit.types import Activation

import fashion_mnist
from common import Arguments, emit_rows, log
from glocal import diagnose

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")


def mobilenet() -> tuple[torch.nn.Module, Any]:
    from glocal.demo import load_model, load_photos, normalise

    return load_model()[0], normalise(load_photos(PHOTOS))


def resnet() -> tuple[torch.nn.Module, Any]:
    from torchvision.models import resnet18

    from glocal.demo import load_photos, normalise

    torch.manual_seed(0)
    return resnet18(weights=None).eval(), normalise(load_photos(PHOTOS))


def fashion(count: int) -> Callable[[], tuple[torch.nn.Module, Any]]:
    def load() -> tuple[torch.nn.Module, Any]:
        images, labels = fashion_mnist.load_images(count), fashion_mnist.load_labels(count)
        return fashion_mnist.load_model(), torch.utils.data.TensorDataset(images, labels)

    return load


def mnist(count: int) -> Callable[[], tuple[torch.nn.Module, Any]]:
    def load() -> tuple[torch.nn.Module, Any]:
        from glocal.presets import mnist as preset

        inputs, labels = preset.digits().tensors
        step = inputs.shape[0] // count  # evenly over the label-sorted file, so every class appears
        return preset.load_model(), torch.utils.data.TensorDataset(inputs[::step][:count], labels[::step][:count])

    return load


def _mobilenet_gamma_box() -> Any:
    from glocal.lrp.canonizers import MobileNetV2Canonizer

    return EpsilonGammaBox(low=-3.0, high=3.0, canonizers=[MobileNetV2Canonizer()])


def _no_activation_rule() -> Any:
    """glocal's MobileNetV2 composite (``"auto"``) without the ``Pass`` rule for the activations."""
    from glocal.lrp.bias_rules import mobilenet_v2_composite

    composite = mobilenet_v2_composite()
    composite.layer_map = [(types, rule) for types, rule in composite.layer_map if types is not Activation]
    return composite


def _resnet_canonizer() -> Any:
    from zennit.torchvision import ResNetCanonizer

    return EpsilonPlusFlat(canonizers=[ResNetCanonizer()])


CASES: dict[str, tuple[Callable[[], tuple[torch.nn.Module, Any]], Callable[[], Any]]] = {
    "mobilenet_v2-auto": (mobilenet, lambda: "auto"),
    "mobilenet_v2-bare": (mobilenet, EpsilonPlusFlat),
    "mobilenet_v2-gamma-box": (mobilenet, _mobilenet_gamma_box),
    "mobilenet_v2-no-activation-rule": (mobilenet, _no_activation_rule),
    "resnet18-auto": (resnet, lambda: "auto"),
    "resnet18-bare": (resnet, EpsilonPlusFlat),
    "resnet18-canonizer": (resnet, _resnet_canonizer),
    "fashion-auto": (fashion(64), lambda: "auto"),
    "fashion-merged": (fashion(64), lambda: EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])),
    "fashion-bare": (fashion(64), EpsilonPlus),
    "mnist-auto": (mnist(64), lambda: "auto"),
    "mnist-epsilon-plus": (mnist(64), EpsilonPlus),
}


def run_case(name: str) -> dict[str, Any]:
    load, composite = CASES[name]
    model, data = load()
    log(f"{name} ...")
    start = time.perf_counter()
    diagnosis = diagnose(model, composite(), data, progress=False)
    seconds = time.perf_counter() - start
    kinds = collections.Counter(f.kind for f in diagnosis.findings)
    largest = sorted(diagnosis.findings, key=lambda f: -abs(f.change))[:6]
    return {
        "case": name,
        "model": diagnosis.model,
        "composite": diagnosis.composite,
        "samples": diagnosis.samples,
        "seconds": round(seconds, 2),
        "kept": round(diagnosis.kept, 5),
        "kept_range": [round(min(diagnosis.kept_per_sample), 5), round(max(diagnosis.kept_per_sample), 5)],
        "findings": dict(kinds),
        "largest": [[f.location, f.kind, round(f.change, 4), round(f.ratio, 4)] for f in largest],
        "completeness": [
            [c.layer, c.channels, round(c.arriving, 4), round(c.deviation, 4)] for c in diagnosis.completeness
        ],
        "warnings": len(diagnosis.warnings),
    }


def main() -> None:
    parser = Arguments(__doc__, cases=CASES, threads=1)
    args = parser.parse()
    emit_rows(args.threads, args.json_out, [lambda name=name: run_case(name) for name in args.cases])


if __name__ == "__main__":
    main()
