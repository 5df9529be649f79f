"""From measured relevance flow to named problems: which module or operation loses or creates relevance, why, and
the fix.

:func:`module_facts` notes, while a composite is attached (canonizers applied), what each module is as far as LRP
cares: its rule, whether it has a bias, whether it is a batch norm no canonizer merged, whether it clips.
:func:`findings` then turns the measured flow (:mod:`glocal.evaluation.flow`) into :class:`Finding`\\ s:

=================  ==================================================================================================
kind               when
=================  ==================================================================================================
``addition``       an addition (or subtraction) of two computed tensors in ``forward``: always reported; autograd
                   hands the whole relevance to both summands
``batch_norm``     a batch norm that no canonizer merged: always reported (its rule, usually ``Pass``, ignores its
                   scale and shift even where the sums still add up)
``clipping``       a ReLU6 / Hardtanh (module or function) without a rule that loses relevance: its gradient is zero
                   where it saturates
``absorption``     a module with a rule that loses relevance (its bias, the rule's stabiliser)
``creation``       a module with a rule that hands on more than arrived
``no_rule``        a module without a rule that changes the relevance (it passes as a gradient)
``operation``      another operation in ``forward`` that changes the relevance (e.g. ``x * 0.5``)
``completeness``   the conditional heatmaps of all channels of a layer miss part of the heatmap (relevance that
                   bypasses the layer)
=================  ==================================================================================================

All but ``addition`` and ``batch_norm`` are reported only when the change exceeds the tolerance *relative to the
relevance arriving there*: layers deep in a network that each lose a tenth of what little reaches them are
findings, even though each loses little of the logit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..lrp.model_structure import describe_names, unmerged_batch_norms
from .diagnosis import Finding, FlowRow, LayerCompleteness
from .flow import OperationFlow

__all__ = ["ModuleFacts", "OperationRow", "findings", "module_facts"]

_NOISE = 1e-6  # changes smaller than this fraction of the logits are rounding, whatever arrives
_ADDITIONS = frozenset({"AddBackward0", "SubBackward0"})
_CLIPPING_NODES = frozenset({"HardtanhBackward0", "HardtanhBackward1"})
_BIAS_FREE = "glocal.lrp.bias_rules (BiasFreeGamma(flat_fallback=True) on convolutions, BiasFreeZBox on the pixels)"
_CANONIZERS = {
    "resnet": "zennit.torchvision.ResNetCanonizer (part of composite='auto' for torchvision ResNets)",
    "mobilenet_v2": "glocal.lrp.canonizers.MobileNetV2Canonizer (part of composite='auto' for torchvision MobileNetV2)",
}


@dataclass(frozen=True)
class ModuleFacts:
    """What one module is, as far as LRP cares, while the composite is attached.

    ``rule``: the class name of its rule (``None``: none); ``bias``: it has a nonzero bias (merged batch norms
    included); ``unmerged``: a batch norm no canonizer merged; ``clipping``: a ReLU6 or Hardtanh.
    """

    type: str
    rule: str | None
    bias: bool
    batch_norm: bool
    unmerged: bool
    clipping: bool


@dataclass(frozen=True)
class OperationRow:
    """An operation in ``forward`` (see :class:`~glocal.evaluation.flow.OperationFlow`) and the relevance arriving
    at its result and sent to its computed operands, as fractions of the starting relevance."""

    operation: OperationFlow
    arriving: float
    sent: float


def module_facts(model: torch.nn.Module, composite: Any) -> dict[str, ModuleFacts]:
    """:class:`ModuleFacts` of every module of ``model``; call it while ``composite`` is attached."""
    rules: dict[str, str] = {}
    if composite is not None:
        context: dict[Any, Any] = {}
        for name, module in model.named_modules():  # in the order attach_rules asked, so the context matches
            template = composite.module_map(context, name, module)
            if template is not None:
                rules[name] = type(template).__name__
    unmerged = set(unmerged_batch_norms(model))
    facts = {}
    for name, module in model.named_modules():
        bias = getattr(module, "bias", None)
        facts[name] = ModuleFacts(
            type=type(module).__name__,
            rule=rules.get(name),
            bias=isinstance(bias, torch.Tensor) and bool((bias != 0).any()),
            batch_norm=isinstance(module, torch.nn.modules.batchnorm._BatchNorm),
            unmerged=name in unmerged,
            clipping=isinstance(module, torch.nn.Hardtanh),  # ReLU6 is a Hardtanh
        )
    return facts


def findings(
    rows: Sequence[FlowRow],
    order: Mapping[str, int],
    facts: Mapping[str, ModuleFacts],
    operations: Sequence[OperationRow],
    completeness: Sequence[LayerCompleteness],
    tolerance: float,
    architecture: str | None,
) -> tuple[Finding, ...]:
    """The findings, in forward order (see the module docstring for the kinds)."""
    found: list[tuple[float, Finding]] = []
    for row in rows:
        fact = facts.get(row.name)
        finding = None if fact is None else _module_finding(row, fact, tolerance)
        if finding is not None:
            found.append((order.get(row.name, 0), finding))
    for op in operations:
        finding = _operation_finding(op, tolerance, architecture)
        if finding is not None:
            found.append((op.operation.order, finding))
    found.sort(key=lambda item: item[0])
    last = max(order.values(), default=0) + 1
    for layer in completeness:
        if layer.deviation > tolerance:
            found.append((last, _completeness_finding(layer)))
    return tuple(finding for _, finding in found)


def _module_finding(row: FlowRow, fact: ModuleFacts, tolerance: float) -> Finding | None:
    change, ratio, rule = row.change, row.ratio, fact.rule
    if fact.unmerged:
        return Finding(
            row.name,
            "batch_norm",
            change,
            ratio,
            f"a batch norm that no canonizer merged; its {rule or 'missing'} rule "
            + (
                "passes the relevance on unchanged, ignoring its scale and shift, so the rule of the layer before it "
                "divides the relevance by contributions the model never uses."
                if not _significant(change, row.relevance_out, tolerance)
                else f"changes the relevance by {change:+.3g} (it passes as a gradient, scaled by weight / std)."
            ),
            "merge it into the layer before it: composite='auto' (merges every batch norm that directly follows a "
            "convolution or dense layer), or zennit.canonizers.SequentialMergeBatchNorm / NamedMergeBatchNorm.",
        )
    if not _significant(change, row.relevance_out, tolerance):
        return None
    gained = "creates" if change > 0 else "loses"
    if rule is None and fact.clipping:
        return Finding(
            row.name,
            "clipping",
            change,
            ratio,
            f"a {fact.type} without an LRP rule: its gradient is 0 where it saturates, so the relevance arriving at "
            f"saturated units is lost ({gained} {abs(change):.3g}).",
            "give activations the Pass rule (zennit's composites and composite='auto' map zennit.types.Activation to "
            "zennit.rules.Pass), or use ReLU instead of ReLU6.",
        )
    if rule is None:
        return Finding(
            row.name,
            "no_rule",
            change,
            ratio,
            f"a {fact.type} without an LRP rule: the relevance passes as a gradient and it {gained} {abs(change):.3g}.",
            "give it a rule in the composite: zennit.rules.Pass for element-wise functions, Norm for pooling and "
            "sums, Epsilon, ZPlus or Gamma for layers with weights.",
        )
    if change < 0:
        if fact.bias:
            return Finding(
                row.name,
                "absorption",
                change,
                ratio,
                f"the {rule} rule gives the bias of this {fact.type} (merged batch norms included) the share b / z of "
                f"the relevance; that share stops here ({abs(change):.3g} of the logits, {1 - ratio:.3g} of what "
                "arrives).",
                f"rules that leave the bias out: {_BIAS_FREE}; composite='auto' uses them for models with batch norms.",
            )
        cause = (
            "its stabiliser epsilon, and units whose contributions cancel"
            if "Epsilon" in rule
            else "units none of whose inputs contributes under the rule (for z+: no positive contribution)"
        )
        return Finding(
            row.name,
            "absorption",
            change,
            ratio,
            f"the {rule} rule keeps {abs(change):.3g} of the logits ({1 - ratio:.3g} of what arrives) here: {cause}.",
            "a smaller epsilon, or BiasFreeGamma(flat_fallback=True) of glocal.lrp.bias_rules, which spreads the "
            "relevance of a unit without contributions evenly over its inputs.",
        )
    cause = (
        "negative biases (merged batch norms included) make its denominators smaller than the inputs' "
        "contributions, or push them across zero"
        if fact.bias
        else "its denominators change sign or come close to zero, or its parameters do not sum to one "
        "(alpha - beta = 1 for AlphaBeta)"
    )
    return Finding(
        row.name,
        "creation",
        change,
        ratio,
        f"the {rule} rule hands on {ratio:.3g} times the relevance that arrives: {cause}.",
        f"rules that leave the bias out: {_BIAS_FREE}."
        if fact.bias
        else "a rule whose denominator cannot cross zero: BiasFreeGamma of glocal.lrp.bias_rules, or zennit's "
        "Epsilon with a larger epsilon.",
    )


def _significant(change: float, arriving: float, tolerance: float) -> bool:
    """Whether ``change`` exceeds ``tolerance`` of what arrives (a relative change: deep layers that each lose a
    little of a little add up) and is above numerical noise."""
    return abs(change) > tolerance * abs(arriving) and abs(change) > _NOISE


def _operation_finding(op: OperationRow, tolerance: float, architecture: str | None) -> Finding | None:
    operation = op.operation
    change = op.sent - op.arriving
    ratio = op.sent / op.arriving if op.arriving != 0 else float("nan")
    where = f"'{operation.module}'" if operation.module else "(model)"
    location = f"{where}: {operation.function}"
    producers = f" (of {describe_names(operation.producers)})" if operation.producers else ""
    if operation.node in _ADDITIONS and operation.operands == 2:
        sign = "subtraction" if operation.node.startswith("Sub") else "addition"
        return Finding(
            location,
            "addition",
            change,
            ratio,
            f"an {sign} of two computed tensors{producers} in forward, outside any module: autograd hands all the "
            f"relevance arriving at the result to both operands"
            + (", the second with its sign flipped." if sign == "subtraction" else f" ({ratio:.3g} times as much)."),
            _CANONIZERS.get(architecture or "")
            or "route it through a zennit.layer.Sum module (out = self.sum(torch.stack([a, b], dim=-1))), which the "
            "Norm rule of every zennit composite and of composite='auto' splits in proportion to the summands.",
        )
    if not _significant(change, op.arriving, tolerance):
        return None
    gained = "creates" if change > 0 else "loses"
    if operation.node in _CLIPPING_NODES:
        return Finding(
            location,
            "clipping",
            change,
            ratio,
            f"{operation.function} called in forward{producers}: no rule reaches a function, and its gradient is 0 "
            f"where it saturates ({gained} {abs(change):.3g}).",
            "call a torch.nn.ReLU6 / Hardtanh module instead, so that the composite's Pass rule reaches it.",
        )
    return Finding(
        location,
        "operation",
        change,
        ratio,
        f"{operation.function} ({operation.node}) in forward{producers}: no rule reaches an operation outside a "
        f"module; the relevance passes as a gradient and it {gained} {abs(change):.3g}.",
        "move the operation into a module with a rule (or fold a constant factor into a layer's weights).",
    )


def _completeness_finding(layer: LayerCompleteness) -> Finding:
    return Finding(
        layer.layer,
        "completeness",
        layer.channel_heatmaps - layer.heatmap,
        1 - layer.deviation,
        f"the conditional heatmaps of all {layer.channels} channels of {layer.layer!r} differ from the plain heatmap "
        f"by up to {layer.deviation:.3g} of its L1 norm: relevance reaches the input around this layer (a skip "
        "branch), and concepts of this layer describe only the part through it.",
        "condition on a layer that every path passes through (e.g. the output of the block after its branches "
        "join) to explain the whole heatmap.",
    )
