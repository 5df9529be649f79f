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

from collections.abc import Sequence
from typing import Any

import torch

from ..layers import get_layer_names, resolve_layers

__all__ = ["abs_norm", "get_layer_names", "get_output_shapes", "max_norm"]


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
