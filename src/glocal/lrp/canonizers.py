"""Canonizers for torchvision models that zennit does not cover.

A canonizer is an undoable rewrite of a model into a form that LRP rules can handle (see :mod:`zennit.canonizers`).
Pass one in a composite, ``EpsilonPlusFlat(canonizers=[MobileNetV2Canonizer()])``; glocal applies it for the length of
one call and removes it afterwards.

torchvision's MobileNetV2 needs three rewrites:

* its batch norms are merged into the convolutions before them (:class:`zennit.canonizers.SequentialMergeBatchNorm`);
* each residual block computes ``x + self.conv(x)`` with a functional add, which autograd passes the *whole* upper
  relevance to both summands (doubling it); :class:`MobileNetV2ResidualCanonizer` routes the add through a
  :class:`zennit.layer.Sum` module, which the built-in composites give the ``Norm`` rule (relevance split in proportion
  to each summand's contribution);
* the global average pooling is a functional call, which autograd spreads uniformly over all positions, active or
  not; :class:`MobileNetV2PoolCanonizer` routes it through a :class:`torch.nn.AdaptiveAvgPool2d` module, which the
  built-in composites also give the ``Norm`` rule.

The activations are ``ReLU6`` modules; zennit counts them as :class:`zennit.types.Activation`, so the built-in
composites pass relevance through them unchanged (the ``Pass`` rule), as for ``ReLU``.

torchvision is imported only when a canonizer is applied, so this module imports without it.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
from zennit.layer import Sum

__all__ = ["MobileNetV2Canonizer", "MobileNetV2PoolCanonizer", "MobileNetV2ResidualCanonizer"]


@functools.cache
def _mobilenet_v2_classes() -> tuple[type[torch.nn.Module], type[torch.nn.Module]]:
    """torchvision's ``(MobileNetV2, InvertedResidual)`` classes."""
    try:
        from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
    except ImportError as error:
        raise ImportError(
            "the MobileNetV2 canonizers rewrite torchvision's MobileNetV2 and need torchvision; "
            "install it with `pip install torchvision`"
        ) from error
    return MobileNetV2, InvertedResidual


def _keeps_method(module: torch.nn.Module, base: type, name: str) -> bool:
    """Whether ``module``'s class still uses ``base``'s method ``name`` (a subclass may have its own forward)."""
    return getattr(type(module), name, None) is getattr(base, name)


def _residual_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """``InvertedResidual.forward`` with the residual add done by the ``canonizer_sum`` module."""
    out = self.conv(x)
    return self.canonizer_sum(torch.stack([x, out], dim=-1))


def _pooled_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """``MobileNetV2.forward`` with the global average pooling done by the ``canonizer_pool`` module."""
    x = self.features(x)
    x = self.canonizer_pool(x)
    x = torch.flatten(x, 1)
    return self.classifier(x)


class MobileNetV2ResidualCanonizer(AttributeCanonizer):
    """Route the residual add of torchvision's ``InvertedResidual`` blocks through a :class:`zennit.layer.Sum` module.

    Only blocks with a residual connection (stride 1, as many input as output channels) are changed, and only those
    whose class keeps torchvision's ``forward``. The block's output is unchanged (``x + y`` and
    ``Sum()(stack([x, y], -1))`` are the same floating point operation); removal deletes the added attributes.
    """

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: torch.nn.Module) -> dict[str, Any] | None:
        _, inverted_residual = _mobilenet_v2_classes()
        if not isinstance(module, inverted_residual) or not getattr(module, "use_res_connect", False):
            return None
        if not _keeps_method(module, inverted_residual, "forward"):
            return None
        return {"forward": types.MethodType(_residual_forward, module), "canonizer_sum": Sum()}

    def copy(self) -> MobileNetV2ResidualCanonizer:
        return self.__class__()


class MobileNetV2PoolCanonizer(AttributeCanonizer):
    """Route the global average pooling of torchvision's ``MobileNetV2`` through a ``torch.nn.AdaptiveAvgPool2d``.

    Only models whose class keeps torchvision's ``forward`` and ``_forward_impl`` are changed.
    """

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: torch.nn.Module) -> dict[str, Any] | None:
        mobilenet_v2, _ = _mobilenet_v2_classes()
        if not isinstance(module, mobilenet_v2):
            return None
        if not (
            _keeps_method(module, mobilenet_v2, "forward") and _keeps_method(module, mobilenet_v2, "_forward_impl")
        ):
            return None
        return {"forward": types.MethodType(_pooled_forward, module), "canonizer_pool": torch.nn.AdaptiveAvgPool2d(1)}

    def copy(self) -> MobileNetV2PoolCanonizer:
        return self.__class__()


class MobileNetV2Canonizer(CompositeCanonizer):
    """Canonizer for torchvision's ``mobilenet_v2``: merged batch norms, a ``Sum`` module for each residual add and a
    pooling module for the global average pooling.

    Examples
    --------
    >>> import torch, torchvision
    >>> model = torchvision.models.mobilenet_v2(num_classes=4).eval()
    >>> handles = MobileNetV2Canonizer().apply(model)
    >>> type(model.features[3].canonizer_sum).__name__
    'Sum'
    >>> for handle in reversed(handles):
    ...     handle.remove()
    >>> hasattr(model.features[3], "canonizer_sum")
    False
    """

    def __init__(self) -> None:
        super().__init__((SequentialMergeBatchNorm(), MobileNetV2ResidualCanonizer(), MobileNetV2PoolCanonizer()))
