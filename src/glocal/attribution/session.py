"""A scoped, undoable attachment of glocal to a user's model.

:class:`Session` applies a composite's canonizers and rules and places a *probe* on each layer of interest. On exit,
normal or by exception, it removes every hook and canonizer and restores the modules' ``training`` flags; glocal never
touches the model's ``requires_grad`` flags or ``.grad`` fields in the first place.

A probe splits a layer's output in two tensors, so the engine can address both sides of a concept mask::

    module -> below (the activation a) -> gate -> above -> rest of the model

The relevance *arriving* at the layer is the gradient at ``above``; the masked relevance is sent down from ``below``.
The gate is an identity whose backward multiplies by the probe's ``mask`` when one is set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import zennit.core

from ..errors import LayerError, warn
from .layers import resolve_layers
from .rules import attach_rules

__all__ = ["Probe", "Session"]


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, below: torch.Tensor, probe: Probe) -> torch.Tensor:
        ctx.probe = probe
        return below.clone()  # a new tensor: in-place ops downstream must not change the recorded activation

    @staticmethod
    def backward(ctx: Any, relevance: torch.Tensor) -> tuple[torch.Tensor, None]:
        mask = ctx.probe.mask
        return (relevance if mask is None else relevance * mask), None


class Probe:
    """The two sides of one layer's output in the current forward pass.

    Attributes
    ----------
    below
        The module's output ``a`` (N, ...), part of the autograd graph that leads to the input.
    above
        An identity copy of ``below`` that the rest of the model consumes.
    mask
        Multiplies the relevance passing the gate, or ``None`` for no masking.
    calls
        How often the layer ran in the current forward pass.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.below: torch.Tensor | None = None
        self.above: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.calls = 0
        self.order = -1

    def hook(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if not isinstance(output, torch.Tensor):
            raise LayerError(
                f"layer {self.name!r} ({type(module).__name__}) returns {type(output).__name__}, not a tensor; "
                "glocal can only condition on or record layers whose output is one tensor. "
                "Pick a submodule that returns a tensor."
            )
        self.calls += 1
        self.below = output
        if output.requires_grad:
            self.above = _Gate.apply(output, self)
            return self.above
        if torch.is_grad_enabled():
            # nothing below needs gradients (e.g. a first layer with frozen weights and an input without gradient):
            # the graph starts here, and relevance arriving at the layer is the gradient of this leaf
            self.above = output.detach().requires_grad_(True)
            return self.above
        self.above = output
        return None

    def reset(self) -> None:
        self.below = self.above = self.mask = None
        self.calls = 0
        self.order = -1


class Session:
    """Context manager: the model with rules, canonizers and probes attached, restored on exit.

    Parameters
    ----------
    model
        The user's model. It is switched to eval mode inside the session (with a warning if it was training).
    composite
        zennit composite giving the LRP rules and canonizers, or ``None`` for plain gradients.
    layers
        Names of the layers to probe.
    """

    def __init__(self, model: torch.nn.Module, composite: zennit.core.Composite | None, layers: Iterable[str]) -> None:
        self.model = model
        self.composite = composite
        self.modules = resolve_layers(model, dict.fromkeys(layers))
        self.probes = {name: Probe(name) for name in self.modules}
        self._handles: list[Any] = []
        self._training: dict[torch.nn.Module, bool] = {}
        self._counter = 0

    def __enter__(self) -> Session:
        try:
            self._enter_eval_mode()
            self._handles.extend(attach_rules(self.model, self.composite))
            # probes go last so that they see the output after the rules replaced it
            for name, module in self.modules.items():
                probe = self.probes[name]
                self._handles.append(module.register_forward_hook(self._ordered(probe)))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()

    def _ordered(self, probe: Probe) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            probe.order = self._counter
            self._counter += 1
            return probe.hook(module, args, output)

        return hook

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        """Run the model once; afterwards each probe holds its layer's tensors."""
        for probe in self.probes.values():
            probe.reset()
        self._counter = 0
        output = self.model(data)
        for probe in self.probes.values():
            if probe.calls > 1:
                raise LayerError(
                    f"layer {probe.name!r} runs {probe.calls} times in one forward pass (the same module object is "
                    "reused), so its activation is ambiguous. Condition on or record a module that runs once, "
                    "e.g. the layer just before or after it."
                )
        return output

    def _enter_eval_mode(self) -> None:
        dynamic = [
            name
            for name, module in self.model.named_modules()
            if module.training and isinstance(module, torch.nn.modules.batchnorm._BatchNorm | torch.nn.Dropout)
        ]
        if dynamic:
            warn(
                f"the model is in training mode and has batch norm or dropout layers ({', '.join(dynamic[:3])}"
                f"{', ...' if len(dynamic) > 3 else ''}). Explanations need fixed statistics, so glocal runs it in "
                "eval mode and restores training mode afterwards. Call model.eval() first to silence this warning."
            )
        self._training = {module: module.training for module in self.model.modules()}
        self.model.eval()

    def _restore(self) -> None:
        errors: list[BaseException] = []
        for handle in reversed(self._handles):
            try:
                handle.remove()
            except BaseException as error:  # keep removing the rest
                errors.append(error)
        self._handles.clear()
        for module, training in self._training.items():
            module.training = training
        self._training.clear()
        for probe in self.probes.values():
            probe.reset()
        if errors:
            raise errors[0]
