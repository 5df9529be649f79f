"""Right rules by default: the LRP composite (rules and canonizers) for a model, chosen from its structure.

``glocal.Attributor(model, "auto")`` (and every glocal entry point that takes a composite) calls :func:`auto`, which
detects the architecture and returns the composite the LRP literature recommends for it:

=================  ================================================================================================
architecture       composite
=================  ================================================================================================
``vgg``            convs reading the input: box rule; other convs: z+ (``ZPlus``); dense: epsilon. No canonizer.
``vgg_bn``         each batch norm merged into the conv before it, and bias-free rules (:mod:`~glocal.lrp.bias_rules`):
                   the bias-free box rule on the pixels, bias-free Gamma (1, flat fallback) on the convs, epsilon on
                   dense layers, so that the merged biases keep no share of the relevance.
``resnet``         the same bias-free rules; :class:`zennit.torchvision.ResNetCanonizer` merges the batch norms and
                   routes each residual add through a ``Sum`` module (``Norm`` rule: relevance split in proportion to
                   the summands).
``mobilenet_v2``   see :data:`MOBILENET_V2` (the one place that defines it).
``cnn``            any other model with convolutions: as ``vgg``.
``cnn_bn``         every batch norm that directly follows a conv or dense layer merged into it (found from the data
                   flow), and the bias-free rules of ``vgg_bn``.
``generic``        no convolution (e.g. an MLP): epsilon on every dense layer, batch norms merged where possible.
=================  ================================================================================================

The convolutions that read the input (found by tracing: the first one, or several where the input feeds several
branches) see unbounded, normalised pixels, where z+ is meaningless. Their rule is the box rule
(``ZBox``, Montavon et al. 2017) with the bounds ``low``/``high`` when :func:`auto` is given them (e.g. the normalised
values of black and white pixels), otherwise :class:`SampleBox`: the box rule with each sample's own per-channel
minimum and maximum as bounds, so that every pixel lies inside its box and no bound has to be guessed.

An explicit composite always wins: ``"auto"`` is only used when asked for.

>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(16, 2))
>>> choice = auto(net)
>>> choice.architecture
'cnn_bn'
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import zennit.core
from zennit.canonizers import Canonizer, NamedMergeBatchNorm
from zennit.composites import LayerMapComposite
from zennit.layer import Sum
from zennit.rules import Epsilon, Norm, Pass, ZBox, ZPlus
from zennit.types import Activation, AvgPool, BatchNorm, Convolution

from .bias_rules import BiasFreeGamma, BiasFreeZBox, identity, input_bound, mobilenet_v2_composite
from .model_structure import ModelStructure, inspect_model

__all__ = [
    "ARCHITECTURES",
    "MOBILENET_V2",
    "AutoComposite",
    "InputLayerComposite",
    "SampleBox",
    "auto",
    "detect",
    "resolve",
]

AUTO = "auto"

Bounds = torch.Tensor | float | None


class SampleBox(ZBox):
    """The box rule (``ZBox``) with each sample's own bounds: per sample and channel, the minimum and maximum over the
    remaining (spatial) dimensions of the layer's input.

    ``ZBox`` needs the lowest and highest possible input values; with normalised images they are the normalised
    values of black and white pixels, which a model does not know. A sample's own extremes are a box that contains
    every one of its pixels (as the rule requires) and, for natural images and digits, nearly the whole pixel range.
    The heatmap of a sample does not depend on the other samples of its batch.
    """

    def __init__(self) -> None:
        super().__init__(low=0.0, high=0.0)  # the bounds are replaced by each sample's own
        self.input_modifiers = [
            identity,
            functools.partial(input_bound, value=None, lowest=True),
            functools.partial(input_bound, value=None, lowest=False),
        ]


def _layer_map(convolution: zennit.core.Hook) -> list[tuple[Any, zennit.core.Hook]]:
    """Pass through activations (and batch norms left unmerged), Norm on sums and average pooling, ``convolution``
    on convolutions, epsilon on dense layers (zennit's built-in composites, the same under zennit 0.4.6 and 0.5)."""
    return [
        (Activation, Pass()),
        (Sum, Norm()),
        (AvgPool, Norm()),
        (BatchNorm, Pass()),
        (Convolution, convolution),
        (torch.nn.Linear, Epsilon(epsilon=1e-6)),
    ]


class InputLayerComposite(LayerMapComposite):
    """A layer-map composite with its own rule for the layers that read the model's input.

    Parameters
    ----------
    layer_map
        ``[(module types, rule), ...]`` for every other module, as for zennit's ``LayerMapComposite``.
    input_rule
        The rule of the input layers.
    input_layers
        Their names (e.g. both convolutions of a model whose input feeds a main and a skip branch); ``None``: the
        first convolution in the module tree, as zennit's ``SpecialFirstLayerMapComposite`` does.
    canonizers
        As for every zennit composite.
    """

    def __init__(
        self,
        layer_map: list[tuple[Any, zennit.core.Hook]],
        input_rule: zennit.core.Hook,
        input_layers: tuple[str, ...] | None = None,
        canonizers: list[Canonizer] | None = None,
    ) -> None:
        self.input_rule = input_rule
        self.input_layers = None if input_layers is None else frozenset(input_layers)
        super().__init__(layer_map, canonizers)  # positional: zennit 0.4.6 names them differently

    def mapping(self, ctx: dict[str, Any], name: str, module: torch.nn.Module) -> zennit.core.Hook | None:
        if self.input_layers is not None:
            if name in self.input_layers:
                return self.input_rule
        elif isinstance(module, Convolution) and not ctx.get("first_layer_visited", False):
            ctx["first_layer_visited"] = True
            return self.input_rule
        return super().mapping(ctx, name, module)


def box_composite(
    first: zennit.core.Hook,
    canonizers: list[Canonizer],
    convolution: zennit.core.Hook | None = None,
    input_layers: tuple[str, ...] | None = None,
) -> zennit.core.Composite:
    """``first`` on the convolutions that read the input (``input_layers``; default: the first convolution),
    ``convolution`` (default z+) on the others, epsilon on dense layers."""
    layer_map = _layer_map(ZPlus() if convolution is None else convolution)
    return InputLayerComposite(layer_map, first, input_layers, canonizers)


def _first_rule(low: Bounds, high: Bounds) -> zennit.core.Hook:
    return SampleBox() if low is None or high is None else ZBox(low=low, high=high)


def _merges(structure: ModelStructure) -> list[Canonizer]:
    """One canonizer merging every batch norm that directly follows a linear layer (found from the data flow)."""
    return [NamedMergeBatchNorm([(list(names), bn) for names, bn in structure.merges])] if structure.merges else []


# -- the composite of each architecture ------------------------------------------------------------------------------

CompositeFactory = Callable[[torch.nn.Module, ModelStructure, Bounds, Bounds], zennit.core.Composite]


def _vgg(model: torch.nn.Module, structure: ModelStructure, low: Bounds, high: Bounds) -> zennit.core.Composite:
    return box_composite(_first_rule(low, high), _merges(structure), input_layers=structure.input_layers)


def _bias_free(low: Bounds, high: Bounds, canonizers: list[Canonizer], structure: ModelStructure) -> Any:
    """Bias-free box rule on the input convolutions, bias-free Gamma (1, flat fallback) on the others
    (:mod:`glocal.lrp.bias_rules`), epsilon on dense layers."""
    return box_composite(
        BiasFreeZBox(low, high),
        canonizers,
        convolution=BiasFreeGamma(1.0, flat_fallback=True),
        input_layers=structure.input_layers,
    )


def _resnet(model: torch.nn.Module, structure: ModelStructure, low: Bounds, high: Bounds) -> zennit.core.Composite:
    """Bias-free rules with zennit's ``ResNetCanonizer``: the merged batch-norm biases would absorb relevance under
    rules that count them (ResNet18 with random batch-norm statistics kept 0.84-0.86 of the logit under z+, 0.9997
    bias-free)."""
    from zennit.torchvision import ResNetCanonizer

    return _bias_free(low, high, [ResNetCanonizer()], structure)


def _with_batch_norms(
    model: torch.nn.Module, structure: ModelStructure, low: Bounds, high: Bounds
) -> zennit.core.Composite:
    """Bias-free rules for a VGG or CNN whose batch norms are merged: the merged biases would absorb relevance under
    rules that count them (a trained SVHN CNN kept 0.35-0.45 of the logit under z+, the FashionMNIST CNN 0.67 in its
    worst 5 % of images, VGG11-BN with random batch-norm statistics 0.65-0.69; bias-free: 0.97-1.05, 0.96, 0.99998)."""
    return _bias_free(low, high, _merges(structure), structure)


def _generic(model: torch.nn.Module, structure: ModelStructure, low: Bounds, high: Bounds) -> zennit.core.Composite:
    return LayerMapComposite(_layer_map(ZPlus()), canonizers=_merges(structure))


# ---- MobileNetV2 default: the one place that defines it ------------------------------------------------------------
def _mobilenet_v2(
    model: torch.nn.Module, structure: ModelStructure, low: Bounds, high: Bounds
) -> zennit.core.Composite:
    """:func:`glocal.lrp.bias_rules.mobilenet_v2_composite`: bias-free box rule on the pixels, bias-free Gamma (1, flat
    fallback) on the convolutions, Epsilon on the classifier, with
    :class:`~glocal.lrp.canonizers.MobileNetV2Canonizer`."""
    return mobilenet_v2_composite(low, high)


MOBILENET_V2: tuple[CompositeFactory, str] = (
    _mobilenet_v2,
    "torchvision MobileNetV2: bias-free box rule on the pixels, bias-free Gamma (1) on the convolutions, epsilon on "
    "the classifier; MobileNetV2Canonizer merges the batch norms and routes the residual adds and the pooling through "
    "modules. The merged biases would absorb 99.3-99.9 % of the logit under rules that count them "
    "(docs/conservation.md)",
)
"""The MobileNetV2 default: ``(factory, why)``. Replace this entry to change what ``"auto"`` gives MobileNetV2."""
# ---- end of the MobileNetV2 default --------------------------------------------------------------------------------


ARCHITECTURES: dict[str, tuple[CompositeFactory, str]] = {
    "vgg": (
        _vgg,
        "torchvision VGG without batch norm: box rule on the pixels, z+ on the convolutions, epsilon on the "
        "dense layers; nothing to canonize",
    ),
    "vgg_bn": (
        _with_batch_norms,
        "torchvision VGG with batch norm: each batch norm merged into the convolution before it; bias-free box rule "
        "on the pixels, bias-free Gamma (1, flat fallback) on the convolutions, epsilon on the dense layers, so that "
        "the merged biases do not absorb the relevance",
    ),
    "resnet": (
        _resnet,
        "torchvision ResNet: bias-free box rule on the pixels, bias-free Gamma (1, flat fallback) on the "
        "convolutions, epsilon on the classifier; ResNetCanonizer merges the batch norms and splits each residual "
        "add by the Norm rule",
    ),
    "mobilenet_v2": MOBILENET_V2,
    "cnn": (
        _vgg,
        "convolutional model: box rule on the convolutions reading the input, z+ on the others, epsilon on "
        "dense layers",
    ),
    "cnn_bn": (
        _with_batch_norms,
        "convolutional model with batch norms: each batch norm merged into the layer it follows; bias-free box rule "
        "on the convolutions reading the input, bias-free Gamma (1, flat fallback) on the others, epsilon on dense "
        "layers, so that the merged biases do not absorb the relevance",
    ),
    "generic": (_generic, "no convolution: epsilon on every dense layer, batch norms merged where they follow one"),
}
"""Architecture name to ``(factory(model, structure, low, high) -> composite, why)``."""


@dataclass(frozen=True)
class AutoComposite:
    """What :func:`auto` chose for a model.

    Attributes
    ----------
    composite
        The zennit composite (rules and canonizers), ready for :class:`~glocal.Attributor`.
    architecture
        The detected architecture, a key of :data:`ARCHITECTURES`.
    reason
        Why: what was detected and what the composite does.
    structure
        The model's batch norms, merges and functional additions (:func:`glocal.lrp.model_structure.inspect_model`).
    """

    composite: zennit.core.Composite
    architecture: str
    reason: str
    structure: ModelStructure = field(repr=False)


def detect(model: torch.nn.Module, structure: ModelStructure | None = None) -> str:
    """The architecture of ``model``: a key of :data:`ARCHITECTURES`, from its classes and structure."""
    structure = inspect_model(model) if structure is None else structure
    torchvision_kind = _torchvision_kind(model)
    if torchvision_kind == "vgg":
        return "vgg_bn" if structure.batch_norms else "vgg"
    if torchvision_kind is not None:
        return torchvision_kind
    if structure.convolutions:
        return "cnn_bn" if structure.batch_norms else "cnn"
    return "generic"


def _torchvision_kind(model: torch.nn.Module) -> str | None:
    module = type(model).__module__
    if not module.startswith("torchvision."):
        return None
    from torchvision.models import VGG, MobileNetV2, ResNet

    kinds: list[tuple[type, str]] = [(VGG, "vgg"), (ResNet, "resnet"), (MobileNetV2, "mobilenet_v2")]
    return next((kind for cls, kind in kinds if isinstance(model, cls)), None)


def auto(model: torch.nn.Module, *, low: Bounds = None, high: Bounds = None) -> AutoComposite:
    """The composite for ``model``'s architecture (see the module docstring for the table).

    Parameters
    ----------
    model
        The model (not changed: canonizers are applied only while glocal runs).
    low, high
        The lowest and highest possible input values (e.g. ``(0 - mean) / std`` and ``(1 - mean) / std`` per
        channel, shaped ``(1, C, 1, 1)``) for the box rule of the input convolutions. Without them each sample's own
        per-channel extremes are used (:class:`SampleBox`).

    Returns
    -------
    AutoComposite
        The composite, the architecture and the reason.
    """
    structure = inspect_model(model)
    architecture = detect(model, structure)
    factory, why = ARCHITECTURES[architecture]
    composite = factory(model, structure, low, high)
    notes = []
    if structure.merges and architecture not in ("resnet", "mobilenet_v2"):
        notes.append(f"{len(structure.merges)} of {len(structure.batch_norms)} batch norms merged")
    if structure.additions and architecture not in ("resnet", "mobilenet_v2"):
        notes.append(
            f"{len(structure.additions)} functional addition(s) that no canonizer covers (relevance is not conserved "
            "through them; route them through zennit.layer.Sum)"
        )
    reason = why + (f" ({'; '.join(notes)})" if notes else "")
    return AutoComposite(composite=composite, architecture=architecture, reason=reason, structure=structure)


def resolve(model: torch.nn.Module, composite: Any) -> tuple[zennit.core.Composite | None, AutoComposite | None]:
    """``(composite, choice)``: ``"auto"`` resolved by :func:`auto` for ``model``; any other value is returned as it
    is (an explicit composite always wins)."""
    if isinstance(composite, str):
        if composite != AUTO:
            raise ValueError(f"composite must be a zennit Composite, None or 'auto', got the string {composite!r}")
        choice = auto(model)
        return choice.composite, choice
    return composite, None
