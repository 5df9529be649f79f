"""zennit-crp's own way of computing conditional attributions, for subclasses that change a step of it.

zennit-crp's ``CondAttribution`` runs in steps that subclasses may override: ``broadcast`` (pair the data with the
conditions), ``relevance_init`` (the initial relevance), ``backward`` (the backward pass, partial with
``exclude_parallel``) and ``heatmap_modifier`` (turn ``data.grad`` into the heatmap). glocal's engine does not run
these steps one by one, so a :class:`~glocal.compat.CondAttribution` whose subclass overrides any of them runs here
instead: hooks on the model (mask functions and recorders on the conditioned and recorded layers), the composite's
own hooks, one forward pass, and the user's steps called where zennit-crp calls them, with its arguments.

What stays glocal's: the model is left as it was (hooks removed, ``requires_grad``, ``.grad`` and ``training``
restored, also after an exception); the caller's data is never written (a copy requiring gradients is attributed);
rows follow the given conditions (unless ``broadcast`` is overridden, see :func:`attribute`); conditioned layers are
passed to ``backward`` last layer first, whatever order the conditions name them in; unknown layers raise
:class:`~glocal.errors.LayerError`; the relevance recorded at a conditioned layer is the masked relevance, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import zennit.core

from ..attribution.layers import resolve_layers
from ..attribution.session import Session
from ..errors import ConditionError, LayerError
from ..lrp.composites import resolve

__all__ = ["OVERRIDE_POINTS", "Recorder", "attribute", "generate", "untouched"]

logger = logging.getLogger(__name__)

OVERRIDE_POINTS = ("broadcast", "relevance_init", "backward", "heatmap_modifier")
"""The methods of zennit-crp's ``CondAttribution`` that subclasses override to change a step."""

Raw = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]
"""``(heatmap, activations, relevances, prediction)``, each with one row per result row."""

MaskFactory = Callable[[int, Any, str], Callable[[torch.Tensor], torch.Tensor]]


class Recorder:
    """Forward hooks on named layers: each output, the gradient arriving at it (after the masks) and the run order.

    Parameters
    ----------
    model
        The model.
    names
        Layers to record (conditioned layers among them).
    """

    def __init__(self, model: torch.nn.Module, names: Sequence[str]) -> None:
        self.modules = resolve_layers(model, dict.fromkeys(names))
        self.outputs: dict[str, torch.Tensor] = {}
        self.relevances: dict[str, torch.Tensor] = {}
        self.masks: dict[str, list[Callable[[torch.Tensor], torch.Tensor]]] = {}
        self.order: list[str] = []

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise LayerError(
                    f"layer {name!r} ({type(module).__name__}) returns {type(output).__name__}, not a tensor; only "
                    "layers whose output is one tensor can be conditioned on or recorded. Pick a submodule that "
                    "returns a tensor."
                )
            self.outputs[name] = output
            self.order.append(name)
            if output.requires_grad:
                output.register_hook(lambda grad: self._mask(name, grad))
                output.register_hook(lambda grad: self._keep(name, grad))

        return hook

    def _mask(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        for mask_fn in self.masks.get(name, ()):
            grad = mask_fn(grad)
        return grad

    def _keep(self, name: str, grad: torch.Tensor) -> None:
        self.relevances[name] = grad.detach()  # the last pass through the layer wins: masked relevance, once

    @contextmanager
    def attached(self) -> Iterator[Recorder]:
        """Register the hooks; remove them on exit."""
        handles = []
        try:
            for name, module in self.modules.items():
                handles.append(module.register_forward_hook(self._hook(name)))
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self.masks.clear()

    def collect(
        self, names: Sequence[str], rows: int | None, on_device: str | torch.device | None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Activations and relevances of ``names`` (first ``rows`` rows; zeros where no relevance arrived)."""
        activations, relevances = {}, {}
        for name in names:
            if name not in self.outputs:
                raise LayerError(f"layer {name!r} did not run in the forward pass, so it has nothing to record")
            activation = self.outputs[name].detach()[:rows]
            relevance = self.relevances.get(name)
            relevance = torch.zeros_like(activation) if relevance is None else relevance[:rows]
            activations[name] = activation.to(on_device) if on_device else activation
            relevances[name] = relevance.to(on_device) if on_device else relevance
        return activations, relevances


@contextmanager
def untouched(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (as glocal's engine, with its warning), no parameter gradients; flags and ``.grad`` restored."""
    parameters = list(model.parameters())
    flags = [parameter.requires_grad for parameter in parameters]
    grads = [parameter.grad for parameter in parameters]
    try:
        with Session(model, None, ()):
            for parameter in parameters:
                parameter.requires_grad_(False)  # as zennit-crp's no_param_grad, but undone afterwards
            yield
    finally:
        for parameter, flag, grad in zip(parameters, flags, grads, strict=True):
            parameter.requires_grad_(flag)
            parameter.grad = grad


def _context(model: torch.nn.Module, composite: zennit.core.Composite | str | None) -> Any:
    """The composite's context on ``model`` (``"auto"`` picks glocal's composite for the architecture)."""
    resolved, _ = resolve(model, composite)
    return (resolved or zennit.core.Composite()).context(model)


def _mask_factory(mask_map: Any) -> Callable[[str], MaskFactory]:
    def factory(name: str) -> MaskFactory:
        if isinstance(mask_map, Mapping):
            if name not in mask_map:
                raise LayerError(
                    f"mask_map has no entry for layer {name!r}, which a condition names; add one, e.g. "
                    f"mask_map={{..., {name!r}: ChannelConcept.mask}}"
                )
            return mask_map[name]
        return mask_map

    return factory


def _backward_order(recorder: Recorder, layers: Sequence[str]) -> list[str]:
    """Conditioned layers, last in the forward pass first (zennit-crp's required order)."""
    ran = {name: i for i, name in enumerate(recorder.order)}
    missing = [name for name in layers if name not in ran]
    if missing:
        raise LayerError(f"conditioned layer(s) {missing} did not run in the forward pass; condition on layers that do")
    return sorted(layers, key=lambda name: ran[name], reverse=True)


def _check_targets(conditions: Sequence[Mapping[str, Any]], output_name: str, start_layer: str | None) -> None:
    with_targets = sum(output_name in condition for condition in conditions)
    if start_layer is None and 0 < with_targets < len(conditions):
        raise ConditionError(
            f"{with_targets} of {len(conditions)} conditions name targets ({output_name!r}) and the others do not; "
            "with an overridden CondAttribution step every condition of one call must name targets, or none "
            f"(then relevance starts from init_rel or the whole output). Add {output_name!r} to every condition."
        )


def _run_group(
    attribution: Any,
    data: torch.Tensor,
    conditions: list[Mapping[str, Any]],
    composite: zennit.core.Composite | str | None,
    record_layer: Sequence[str],
    mask_map: Any,
    start_layer: str | None,
    init_rel: Any,
    on_device: str | torch.device | None,
    exclude_parallel: bool,
    broadcast: bool,
    paired: bool,
) -> Raw:
    """One zennit-crp ``_attribute`` call: broadcast, hooks, forward, relevance_init, backward, heatmap_modifier."""
    output_name = attribution.MODEL_OUTPUT_NAME
    leaf = data.detach().clone().requires_grad_(True)
    if broadcast:
        data_b, conditions_b = attribution.broadcast(leaf, conditions)
    elif paired:  # sample i under condition i
        data_b, conditions_b = leaf, list(conditions)
    else:  # every sample under every condition of the group (sample-major)
        data_b = leaf.repeat_interleave(len(conditions), dim=0) if len(conditions) > 1 else leaf
        if data_b is not leaf:
            data_b.retain_grad()
        conditions_b = list(conditions) * len(data)
    _check_targets(conditions_b, output_name, start_layer)
    factory = _mask_factory(mask_map)
    targets: list[Any] = []
    masks: dict[str, list[Callable[[torch.Tensor], torch.Tensor]]] = {}
    for row, condition in enumerate(conditions_b):
        for name, ids in condition.items():
            if name == output_name:
                targets.append(ids)
            else:
                masks.setdefault(name, []).append(factory(name)(row, ids, name))
    conditioned = list(masks)
    record = list(dict.fromkeys([*record_layer, *conditioned, *([start_layer] if start_layer else [])]))
    recorder = Recorder(attribution.model, record)
    with ExitStack() as stack:
        stack.enter_context(untouched(attribution.model))
        stack.enter_context(recorder.attached())
        recorder.masks.update(masks)
        modified = stack.enter_context(_context(attribution.model, composite))
        output = modified(data_b)
        if start_layer is not None:
            prediction = recorder.outputs[start_layer]
            grad_mask = attribution.relevance_init(prediction.detach().clone(), None, init_rel)
            conditioned = [name for name in conditioned if name != start_layer]
        else:
            prediction = output
            grad_mask = attribution.relevance_init(prediction.detach().clone(), targets, init_rel)
        attribution.backward(
            prediction, grad_mask, exclude_parallel, _backward_order(recorder, conditioned), recorder.outputs
        )
        heatmap = attribution.heatmap_modifier(data_b, on_device)
        activations, relevances = recorder.collect(record, None, on_device)
    prediction = prediction.detach()
    return heatmap.detach(), activations, relevances, prediction.to(on_device) if on_device else prediction


def _groups(conditions: Sequence[Mapping[str, Any]], exclude_parallel: bool) -> list[list[int]]:
    """zennit-crp's split: with ``exclude_parallel`` one group per set of condition keys, in order of appearance."""
    if not exclude_parallel:
        return [list(range(len(conditions)))]
    groups: dict[frozenset[str], list[int]] = {}
    for i, condition in enumerate(conditions):
        groups.setdefault(frozenset(condition), []).append(i)
    return list(groups.values())


def _place(parts: list[tuple[list[int] | None, Raw]], n_rows: int) -> Raw:
    """Results of several groups in one: rows scattered to their given positions, or concatenated in group order."""
    if any(rows is None for rows, _ in parts):
        heatmap = torch.cat([raw[0] for _, raw in parts])
        prediction = torch.cat([raw[3] for _, raw in parts])
        activations = {name: torch.cat([raw[1][name] for _, raw in parts]) for name in parts[0][1][1]}
        relevances = {name: torch.cat([raw[2][name] for _, raw in parts]) for name in parts[0][1][2]}
        return heatmap, activations, relevances, prediction

    def scatter(values: list[torch.Tensor], index: list[list[int]]) -> torch.Tensor:
        first = values[0]
        out = torch.zeros(n_rows, *first.shape[1:], dtype=first.dtype, device=first.device)
        for value, rows in zip(values, index, strict=True):
            out[torch.as_tensor(rows, device=out.device)] = value
        return out

    index = [rows for rows, _ in parts if rows is not None]
    names = list(parts[0][1][2])
    return (
        scatter([raw[0] for _, raw in parts], index),
        {name: scatter([raw[1][name] for _, raw in parts], index) for name in names},
        {name: scatter([raw[2][name] for _, raw in parts], index) for name in names},
        scatter([raw[3] for _, raw in parts], index),
    )


def attribute(
    attribution: Any,
    data: torch.Tensor,
    conditions: list[Mapping[str, Any]],
    composite: zennit.core.Composite | str | None,
    record_layer: Sequence[str],
    mask_map: Any,
    start_layer: str | None,
    init_rel: Any,
    on_device: str | torch.device | None,
    exclude_parallel: bool,
    overridden: Sequence[str],
) -> Raw:
    """zennit-crp's ``CondAttribution.__call__`` with the subclass's steps.

    With ``exclude_parallel`` the conditions are split by their set of layer names (as zennit-crp does); each group
    is one forward and one backward pass. Rows follow the given conditions (``len(data) == len(conditions)``: sample
    ``i`` under condition ``i``; otherwise every sample under every condition, row ``n * M + m``). An overridden
    ``broadcast`` decides the rows of each group itself; the groups' rows are then concatenated in group order, as
    zennit-crp returns them.
    """
    logger.debug("CondAttribution subclass overrides %s: running zennit-crp's steps", ", ".join(overridden))
    broadcast = "broadcast" in overridden
    n, m = len(data), len(conditions)
    parts: list[tuple[list[int] | None, Raw]] = []
    for members in _groups(conditions, exclude_parallel):
        group = [conditions[i] for i in members]
        paired = n == m
        group_data = data[members] if paired and len(members) < n else data
        raw = _run_group(
            attribution,
            group_data,
            group,
            composite,
            record_layer,
            mask_map,
            start_layer,
            init_rel,
            on_device,
            exclude_parallel,
            broadcast,
            paired,
        )
        if broadcast:
            rows = None
        elif paired:
            rows = members
        else:
            rows = [sample * m + member for sample in range(n) for member in members]
        parts.append((rows, raw))
    return _place(parts, n if n == m else n * m)


def generate(
    attribution: Any,
    data: torch.Tensor,
    conditions: list[Mapping[str, Any]],
    composite: zennit.core.Composite | str | None,
    record_layer: Sequence[str],
    mask_map: Any,
    start_layer: str | None,
    init_rel: Any,
    batch_size: int,
    on_device: str | torch.device | None,
    exclude_parallel: bool,
    progress: Any,
    overridden: Sequence[str],
) -> Iterator[Raw]:
    """zennit-crp's ``CondAttribution.generate`` with the subclass's steps, for every sample in turn.

    Each sample is repeated ``min(batch_size, len(conditions))`` times and run forward once; each batch of conditions
    is one ``relevance_init``, ``backward`` (``generate=True`` except for the last batch) and ``heatmap_modifier``.
    ``broadcast`` is not called (zennit-crp's ``generate`` does not call it either).
    """
    logger.debug("CondAttribution subclass overrides %s: running zennit-crp's steps", ", ".join(overridden))
    output_name = attribution.MODEL_OUTPUT_NAME
    if exclude_parallel and len({frozenset(condition) for condition in conditions}) > 1:
        raise ConditionError(
            "with exclude_parallel=True and an overridden CondAttribution step, every condition given to generate "
            "must name the same layers (zennit-crp's rule); split the conditions by their layers or pass "
            "exclude_parallel=False"
        )
    _check_targets(conditions, output_name, start_layer)
    factory = _mask_factory(mask_map)
    conditioned = list(dict.fromkeys(name for condition in conditions for name in condition if name != output_name))
    record = list(dict.fromkeys([*record_layer, *conditioned, *([start_layer] if start_layer else [])]))
    rows = min(batch_size, len(conditions))
    batches = [conditions[begin : begin + rows] for begin in range(0, len(conditions), rows)]
    for sample in range(len(data)):
        leaf = data[sample : sample + 1].detach().clone().requires_grad_(True)
        recorder = Recorder(attribution.model, record)
        with ExitStack() as stack:
            stack.enter_context(untouched(attribution.model))
            stack.enter_context(recorder.attached())
            modified = stack.enter_context(_context(attribution.model, composite))
            data_batch = leaf.repeat_interleave(rows, dim=0)
            data_batch.retain_grad()
            output = modified(data_batch)
            prediction = recorder.outputs[start_layer] if start_layer is not None else output
            below = [name for name in _backward_order(recorder, conditioned) if name != start_layer]
            for b, batch in enumerate(batches):
                last = b == len(batches) - 1
                recorder.masks.clear()
                recorder.relevances.clear()
                targets = []
                for row, condition in enumerate(batch):
                    for name, ids in condition.items():
                        if name == output_name:
                            targets.append(ids)
                        else:
                            recorder.masks.setdefault(name, []).append(factory(name)(row, ids, name))
                if last and start_layer is None and targets:  # zennit-crp pads the last batch's targets
                    targets.extend([targets[0]] * (rows - len(targets)))
                grad_mask = attribution.relevance_init(prediction.detach().clone(), targets, init_rel)
                attribution.backward(prediction, grad_mask, exclude_parallel, below, recorder.outputs, not last)
                heatmap = attribution.heatmap_modifier(data_batch).detach()[: len(batch)]
                activations, relevances = recorder.collect(record, len(batch), on_device)
                result = prediction.detach()[: len(batch)]
                yield (
                    heatmap.to(on_device) if on_device else heatmap,
                    activations,
                    relevances,
                    result.to(on_device) if on_device else result,
                )
                data_batch.grad = None
                if progress is not None:
                    progress.update(1)
