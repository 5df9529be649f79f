"""LRP rules that leave the bias out, so that the relevance of a layer's output reaches its input in full.

A standard LRP rule treats a layer's bias as one more input, ``z_j = sum_i x_i w_ij + b_j``, and gives it the share
``b_j / z_j`` of the relevance ``R_j``: that share is absorbed and never reaches the pixels. In networks whose batch
norms are merged into the convolutions (MobileNetV2), the merged biases are large, and the Gamma rule of
:class:`zennit.composites.EpsilonGammaBox` loses almost all of a logit's relevance on its way through the blocks
(0.1-0.7 % reaches the input on five photos; measured in ``benchmarks/conservation.py``, see
``docs/conservation.md``). :func:`mobilenet_v2_composite`, built from the rules here, keeps 99.6-99.9 %.

The rules here are the rules of :mod:`zennit.rules` with the bias left out of every term, numerator and denominator,
so each neuron hands its whole relevance to its inputs (``sum_i R_i = sum_j R_j``), in proportion to the inputs'
contributions under the rule (the bias's share is redistributed in proportion to the others):

* :class:`BiasFreeGamma`: the generalised Gamma rule, choosing the positive or negative branch by the sign of the
  bias-free pre-activation ``sum_i x_i w_ij``. Its denominator then has the sign of, and at least the magnitude of,
  that pre-activation, so it never crosses zero. (``zennit.rules.Gamma(zero_params="bias")`` drops the bias from the
  denominator but still picks the branch by the sign of the biased output: where the bias decided the sign, the
  denominator is a near-cancelling difference, and relevance overflows to 1e24 and NaN on MobileNetV2.) Optionally
  a neuron whose inputs are all zero (its activation is its bias alone) spreads its relevance evenly over them
  instead of keeping it (``flat_fallback``).
* :class:`BiasFreeZPlus`: ``z+`` (``alpha=1, beta=0``), the positive contributions only.
* :class:`BiasFreeZBox`: the ``z^B`` rule of the input layer.

The parameter modifiers are plain module-level functions, so the rules work with zennit 0.4.6 (functions) and
later (``ParamMod``) alike, and pickle. Each rule subclasses the zennit rule it generalises: glocal's engine then
evaluates it on its fast path (element-wise gradient mapper, sum-of-products reducer).

Examples
--------
One output ``z = 2 * 1 + (-1) * 1 + b`` with ``b = -3``: the Gamma rule with bias would divide by a negative
denominator; bias-free, the branch is chosen by ``2 - 1 = 1 > 0`` and relevance 1 splits as ``(2 + 2 * gamma) : (-1)``.

>>> import torch
>>> from zennit.attribution import Gradient
>>> from zennit.composites import LayerMapComposite
>>> layer = torch.nn.Linear(2, 1)
>>> with torch.no_grad():
...     _ = layer.weight.copy_(torch.tensor([[2.0, -1.0]])), layer.bias.fill_(-3.0)
>>> composite = LayerMapComposite([(torch.nn.Linear, BiasFreeGamma(gamma=0.5))])
>>> with Gradient(layer, composite) as attributor:
...     _, relevance = attributor(torch.ones(1, 2), torch.ones(1, 1))
>>> [round(value, 4) for value in relevance[0].tolist()]  # (3 : -1) / 2
[1.5, -0.5]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import zennit.rules

__all__ = ["BiasFreeGamma", "BiasFreeZBox", "BiasFreeZPlus", "mobilenet_v2_composite"]

Tensors = Sequence[torch.Tensor]


def stabilize(value: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``value`` moved away from zero by ``epsilon`` in the direction of its sign (zero counts as positive)."""
    return value + torch.where(value >= 0, epsilon, -epsilon)


def _no_bias(param: torch.Tensor, name: str) -> torch.Tensor:
    return torch.zeros_like(param) if name == "bias" else param


def _gamma_weight(param: torch.Tensor, name: str, gamma: float, positive: bool) -> torch.Tensor:
    """``w + gamma * w+`` (``positive``) or ``w + gamma * w-``; the bias set to zero."""
    if name == "bias":
        return torch.zeros_like(param)
    return param + gamma * (param.clamp(min=0) if positive else param.clamp(max=0))


def _clamped_weight(param: torch.Tensor, name: str, positive: bool) -> torch.Tensor:
    """``w+`` (``positive``) or ``w-``; the bias set to zero."""
    if name == "bias":
        return torch.zeros_like(param)
    return param.clamp(min=0) if positive else param.clamp(max=0)


def _positive_part(input: torch.Tensor) -> torch.Tensor:
    return input.clamp(min=0)


def _negative_part(input: torch.Tensor) -> torch.Tensor:
    return input.clamp(max=0)


def identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def input_bound(input: torch.Tensor, value: torch.Tensor | float | None, lowest: bool) -> torch.Tensor:
    """``value`` (a number or a tensor broadcasting against one sample) expanded to ``input``'s shape; for ``None``
    each sample's own per-channel minimum (``lowest``) or maximum over the remaining dimensions."""
    if value is None:
        dims = tuple(range(2, input.dim())) or (1,)
        extreme = input.amin(dim=dims, keepdim=True) if lowest else input.amax(dim=dims, keepdim=True)
        return extreme.expand_as(input)
    bound = torch.as_tensor(value).to(input)
    if bound.dim() == input.dim() and bound.shape[0] == 1:  # (1, C, 1, 1): a batch of one to broadcast
        bound = bound[0]
    return bound.expand(input.shape[1:]).unsqueeze(0).expand(input.shape)


def _sum_of_products(inputs: Tensors, gradients: Tensors) -> torch.Tensor:
    return sum(x * g for x, g in zip(inputs, gradients, strict=True))  # type: ignore[return-value]


def _gamma_mapper(relevance: torch.Tensor, outputs: Tensors, epsilon: float) -> list[torch.Tensor]:
    positive = (outputs[4] >= 0).to(relevance)
    negative = 1 - positive
    up_denominator, down_denominator = outputs[0] + outputs[1], outputs[2] + outputs[3]
    up = relevance * positive / stabilize(up_denominator, epsilon)
    down = relevance * negative / stabilize(down_denominator, epsilon)
    mapped = [up, up, down, down, torch.zeros_like(relevance)]
    if len(outputs) > 5:  # the flat fallback: outputs[5] counts each neuron's inputs
        empty = positive * (up_denominator == 0) + negative * (down_denominator == 0)
        mapped.append(relevance * empty / outputs[5].clamp(min=1))
    return mapped


def _flat_weight(param: torch.Tensor, name: str) -> torch.Tensor:
    """All weights one, no bias: the layer then counts the inputs of each neuron (the Flat rule's weights)."""
    return torch.zeros_like(param) if name == "bias" else torch.ones_like(param)


def _ones(input: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(input)


def _zplus_mapper(relevance: torch.Tensor, outputs: Tensors, epsilon: float) -> list[torch.Tensor]:
    share = relevance / stabilize(outputs[0] + outputs[1], epsilon)
    return [share, share]


def _zbox_mapper(relevance: torch.Tensor, outputs: Tensors, epsilon: float) -> list[torch.Tensor]:
    share = relevance / stabilize(outputs[0] - outputs[1] - outputs[2], epsilon)
    return [share, share, share]


def _zbox_reducer(inputs: Tensors, gradients: Tensors) -> torch.Tensor:
    return inputs[0] * gradients[0] - inputs[1] * gradients[1] - inputs[2] * gradients[2]


class BiasFreeGamma(zennit.rules.Gamma):
    """The generalised LRP Gamma rule without the bias; the branch follows the sign of ``z_j = sum_i x_i w_ij``.

    With ``z_ij = x_i w_ij``: for ``z_j >= 0``, ``R_i = sum_j (z_ij + gamma z_ij+) / (z_j + gamma z_j+) R_j`` with
    ``z_j+ = sum_i z_ij+`` (the positive contributions, favoured by ``gamma``); for ``z_j < 0`` the same with the
    negative parts. Equal to :class:`zennit.rules.Gamma` on a layer without bias (up to the branch of ``z_j = 0``).

    A neuron none of whose inputs contributes (all ``z_ij = 0``: its activation is its bias alone) has a zero
    denominator and keeps its relevance. With ``flat_fallback`` it spreads it evenly over the inputs it is connected
    to instead (the Flat rule, Lapuschkin et al. 2019; these inputs are zero, as is their activation), so that no
    relevance is lost.

    Parameters
    ----------
    gamma
        How much the contributions of the branch's sign are favoured (``0`` is LRP-0, large values approach z+).
    stabilizer
        Added to the denominators with their sign.
    flat_fallback
        Spread the relevance of neurons without input contributions evenly over their inputs.
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6, flat_fallback: bool = False) -> None:
        self.gamma, self.stabilizer, self.flat_fallback = gamma, stabilizer, flat_fallback
        fallback = 1 if flat_fallback else 0
        zennit.core.BasicHook.__init__(
            self,
            input_modifiers=[_positive_part, _negative_part, _positive_part, _negative_part, identity]
            + [_ones] * fallback,
            param_modifiers=[
                functools.partial(_gamma_weight, gamma=gamma, positive=True),
                functools.partial(_gamma_weight, gamma=gamma, positive=False),
                functools.partial(_gamma_weight, gamma=gamma, positive=False),
                functools.partial(_gamma_weight, gamma=gamma, positive=True),
                _no_bias,
            ]
            + [_flat_weight] * fallback,
            output_modifiers=[identity] * (5 + fallback),
            gradient_mapper=functools.partial(_gamma_mapper, epsilon=stabilizer),
            reducer=_sum_of_products,
        )

    def copy(self) -> BiasFreeGamma:
        return self.__class__(self.gamma, self.stabilizer, self.flat_fallback)


class BiasFreeZPlus(zennit.rules.ZPlus):
    """LRP ``z+`` without the bias: ``R_i = sum_j (x_i+ w_ij+ + x_i- w_ij-) / z_j+ R_j``.

    ``z_j+ >= 0`` is the sum of the positive contributions; a neuron without any loses its relevance (all its
    numerators are zero too).

    Parameters
    ----------
    stabilizer
        Added to the denominator.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = stabilizer
        zennit.core.BasicHook.__init__(
            self,
            input_modifiers=[_positive_part, _negative_part],
            param_modifiers=[
                functools.partial(_clamped_weight, positive=True),
                functools.partial(_clamped_weight, positive=False),
            ],
            output_modifiers=[identity] * 2,
            gradient_mapper=functools.partial(_zplus_mapper, epsilon=stabilizer),
            reducer=_sum_of_products,
        )

    def copy(self) -> BiasFreeZPlus:
        return self.__class__(self.stabilizer)


class BiasFreeZBox(zennit.rules.ZBox):
    """LRP ``z^B`` for inputs bounded by ``low <= x <= high``, without the bias.

    ``R_i = sum_j (x_i w_ij - l_i w_ij+ - h_i w_ij-) / sum_i (x_i w_ij - l_i w_ij+ - h_i w_ij-) R_j``; every term of
    the denominator is ``>= 0`` for inputs within the bounds.

    Parameters
    ----------
    low, high
        The lowest and highest input values: numbers, or tensors broadcasting against one sample (``(C, 1, 1)`` or
        ``(1, C, 1, 1)``); ``None`` for each sample's own per-channel minimum and maximum (a box that holds every
        pixel of the sample, when the true bounds are not known).
    stabilizer
        Added to the denominator.
    """

    def __init__(
        self,
        low: torch.Tensor | float | None = None,
        high: torch.Tensor | float | None = None,
        stabilizer: float = 1e-6,
    ) -> None:
        self.low, self.high, self.stabilizer = low, high, stabilizer
        zennit.core.BasicHook.__init__(
            self,
            input_modifiers=[
                identity,
                functools.partial(input_bound, value=low, lowest=True),
                functools.partial(input_bound, value=high, lowest=False),
            ],
            param_modifiers=[
                _no_bias,
                functools.partial(_clamped_weight, positive=True),
                functools.partial(_clamped_weight, positive=False),
            ],
            output_modifiers=[identity] * 3,
            gradient_mapper=functools.partial(_zbox_mapper, epsilon=stabilizer),
            reducer=_zbox_reducer,
        )

    def copy(self) -> BiasFreeZBox:
        return self.__class__(self.low, self.high, self.stabilizer)


def mobilenet_v2_composite(
    low: torch.Tensor | float | None = None,
    high: torch.Tensor | float | None = None,
    gamma: float = 1.0,
    epsilon: float = 1e-6,
) -> zennit.core.Composite:
    """glocal's default LRP composite for torchvision's MobileNetV2: bias-free rules on every convolution.

    :class:`BiasFreeZBox` on the first convolution (the pixels), :class:`BiasFreeGamma` (``gamma=1``, with the flat
    fallback) on every other convolution, ``Epsilon`` (with its bias) on the classifier, ``Norm`` on the residual sums
    and the pooling, ``Pass`` on the activations; :class:`~glocal.lrp.canonizers.MobileNetV2Canonizer` merges the batch
    norms and routes the residual adds and the pooling through modules. On the real MobileNetV2 99.6-99.9 % of the
    logit reaches the pixels (the classifier's bias keeps the rest), against 0.1-0.7 % with
    :class:`zennit.composites.EpsilonGammaBox` (``benchmarks/conservation.py``, ``docs/conservation.md``).

    Parameters
    ----------
    low, high
        The lowest and highest (normalised) pixel values, e.g. ``(0 - mean) / std`` and ``(1 - mean) / std`` with
        shape ``(1, 3, 1, 1)``; ``None`` for each image's own per-channel extremes.
    gamma
        The Gamma rule's parameter on the convolutions (smaller values make the heatmaps noisy: at ``0.25`` most of
        a heatmap is positive and negative values that cancel).
    epsilon
        The classifier's epsilon.

    Examples
    --------
    >>> import torchvision
    >>> from glocal import Attributor
    >>> model = torchvision.models.mobilenet_v2(num_classes=3).eval()
    >>> result = Attributor(model, mobilenet_v2_composite())(torch.randn(1, 3, 64, 64), {"y": [0]})
    >>> tuple(result.input_relevance.shape)
    (1, 3, 64, 64)
    """
    from zennit.composites import SpecialFirstLayerMapComposite
    from zennit.layer import Sum
    from zennit.types import Activation, AvgPool, Convolution

    from .canonizers import MobileNetV2Canonizer

    return SpecialFirstLayerMapComposite(
        layer_map=[
            (Activation, zennit.rules.Pass()),
            (Sum, zennit.rules.Norm()),
            (AvgPool, zennit.rules.Norm()),
            (Convolution, BiasFreeGamma(gamma, flat_fallback=True)),
            (torch.nn.Linear, zennit.rules.Epsilon(epsilon)),
        ],
        first_map=[(Convolution, BiasFreeZBox(low, high))],
        canonizers=[MobileNetV2Canonizer()],
    )
