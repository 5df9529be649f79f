"""zennit-crp's helper functions (``crp.helper``): layer names, output shapes and normalisations.

>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 3))
>>> get_layer_names(net, [torch.nn.Conv2d, torch.nn.Linear])
['0', '3']
>>> get_output_shapes(net, torch.zeros(1, 1, 4, 4), ["0", "3"])
{'0': torch.Size([2, 2, 2]), '3': torch.Size([3])}
>>> abs_norm(torch.tensor([1.0, -3.0]))
tensor([ 0.2500, -0.7500])
>>> max_norm(torch.tensor([1.0, 4.0]))
tensor([0.2500, 1.0000])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attribution.layers import get_layer_names, resolve_layers
from .maximization import load_maximization
from .statistics import load_stat_targets, load_statistics

__all__ = [
    "abs_norm",
    "find_files",
    "get_layer_names",
    "get_output_shapes",
    "load_maximization",
    "load_receptive_field",
    "load_stat_targets",
    "load_statistics",
    "max_norm",
]


def abs_norm(rel: torch.Tensor, stabilize: float = 1e-10) -> torch.Tensor:
    """``rel`` divided by the sum of its absolute values (over the whole tensor) plus ``stabilize``."""
    return rel / (torch.sum(torch.abs(rel)) + stabilize)


def max_norm(rel: torch.Tensor, stabilize: float = 1e-10) -> torch.Tensor:
    """``rel`` divided by its largest value (over the whole tensor) plus ``stabilize``."""
    return rel / (rel.max() + stabilize)


def get_output_shapes(
    model: torch.nn.Module, single_sample: torch.Tensor, record_layers: Sequence[str]
) -> dict[str, torch.Size]:
    """Each layer's output shape without the batch dimension, from one forward pass of ``single_sample``.

    Layers that do not run (or are not in the model) are left out, as in zennit-crp. The forward pass runs without
    gradients and in eval mode (batch-norm statistics stay as they are); hooks and training flags are restored, also
    after an exception.
    """
    wanted = [name for name, _ in model.named_modules() if name in set(record_layers)]
    modules = resolve_layers(model, wanted)
    shapes: dict[str, torch.Size] = {}

    def recorder(name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            shapes[name] = output.shape[1:]

        return hook

    training = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(recorder(name)) for name, module in modules.items()]
    try:
        model.eval()
        with torch.no_grad():
            model(single_sample)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag
    return shapes


def load_receptive_field(path_folder: str | Path, layer_name: str) -> np.ndarray:
    """zennit-crp's receptive-field array of a layer, ``<path_folder>/<layer_name>.npy`` (memory-mapped)."""
    return np.load(Path(path_folder) / f"{layer_name}.npy", mmap_mode="r")


def find_files(path: str | Path | None = None) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """The result folders of a zennit-crp ``FeatureVisualization`` in ``path`` (default: the working directory).

    Returns
    -------
    tuple of list of str
        Paths of the ``RelMax``, ``ActMax``, ``RelStats``, ``ActStats`` and ``ReField`` folders, by their names.
    """
    root = Path(os.getcwd() if path is None else path)
    found: dict[str, list[str]] = {kind: [] for kind in ("RelMax", "ActMax", "RelStats", "ActStats", "ReField")}
    for name in os.listdir(root):
        for kind, paths in found.items():
            if kind in name:
                paths.append(str(root / name))
                break
    return found["RelMax"], found["ActMax"], found["RelStats"], found["ActStats"], found["ReField"]
