"""One forward pass and the calls made on it: attributions of condition lists, and relevance inside input regions.

A :class:`Run` checks the forward pass (the model ran on the input, returned one tensor per sample, ran every probed
layer), then answers each call with the backward passes of :mod:`glocal.attribution.propagation` and collects their
results into an :class:`~glocal.Attribution`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import torch
import zennit.core

from ..errors import (
    CanonizerWarning,
    ConditionError,
    ConservationWarning,
    GradientDisabledError,
    InputError,
    warn,
)
from ..lrp.composites import AutoComposite
from ..lrp.conservation import KeptRelevance, structure_problems
from .concepts import Concept
from .conditions import Condition, as_conditions
from .gradients import Gradients
from .inputs import dtype_problem
from .masks import InitRelevance, Masks, RootRelevance
from .planning import PathPlanner
from .propagation import Member, Propagation
from .regions import expand_region, region_weights
from .results import Attribution
from .session import Session

__all__ = ["OnceChecks", "Run", "RunOwner"]


@dataclass
class OnceChecks:
    """The checks an attributor makes once, whichever of its runs gets there first: the model's structure against
    the composite (:class:`~glocal.CanonizerWarning`) and whether relevance was conserved
    (:class:`~glocal.ConservationWarning`, at most once)."""

    structure_checked: bool = False
    conservation_warned: bool = False


class RunOwner(Protocol):
    """What a run needs of the :class:`~glocal.Attributor` that starts it (a protocol: the attributor's module sits
    above this one)."""

    model: torch.nn.Module
    composite: zennit.core.Composite | None
    choice: AutoComposite | None
    output_name: str
    checks: OnceChecks

    def concept(self, layer: str) -> Concept:
        """The concept type used for ``layer``."""
        ...


class Run:
    """One forward pass, and the backward passes of any number of condition lists (see
    :meth:`~glocal.Attributor.session`)."""

    def __init__(
        self,
        attributor: RunOwner,
        session: Session,
        data: torch.Tensor,
        record: list[str],
        start_layer: str | None,
        init_rel: InitRelevance,
        sole_path: bool,
        heatmap: bool,
        on_device: str | torch.device | None,
        input_grad: bool = True,
    ) -> None:
        self.attributor = attributor
        self.session = session
        self.probes = session.probes
        self.record = record
        self.start_layer = start_layer
        self.init_rel = init_rel
        self.sole_path = sole_path
        self.heatmap = heatmap
        self.on_device = on_device
        # without input_grad, layers fed by the input directly attach no rule: only layer relevances are needed
        self.input = data.detach().requires_grad_(input_grad)
        self.n = data.shape[0]
        try:
            self.output = session.forward(self.input)
        except (RuntimeError, ValueError, TypeError) as error:
            if isinstance(error, GradientDisabledError | ConditionError):
                raise
            problem = dtype_problem(attributor.model, data)
            if problem is not None:
                raise InputError(problem) from error
            raise InputError(
                f"the model failed on input of shape {tuple(data.shape)} and dtype {data.dtype}: {error}. "
                "Pass a batch shaped as the model expects, with the batch dimension first."
            ) from error
        if not isinstance(self.output, torch.Tensor):
            raise InputError(f"the model must return one tensor, it returned {type(self.output).__name__}")
        if self.output.dim() == 0 or self.output.shape[0] != self.n:
            raise InputError(
                f"the model's output has shape {tuple(self.output.shape)}, which does not start with the batch size "
                f"{self.n}. Pass a batch with the batch dimension first (data.unsqueeze(0) for one sample)."
            )
        for name, probe in self.probes.items():
            if probe.calls == 0:
                raise ConditionError(
                    f"layer {name!r} exists but did not run in the forward pass, so it has no activation. "
                    "Pick a layer the model's forward actually uses."
                )
        if start_layer is not None:
            below = self.probes[start_layer].below
            assert below is not None
            self.root = below
        else:
            self.root = self.output
        self._planner = PathPlanner(self.probes, self.input, self.root, start_layer)
        self.order = self._planner.order
        if not attributor.checks.structure_checked:  # once per attributor, while the canonizers are applied
            attributor.checks.structure_checked = True
            problems = structure_problems(attributor.model, self.output, self.input)
            if problems is not None:
                warn(problems, CanonizerWarning)
        # the planner's method, not self._below: a reference back to the run would make a cycle that keeps the run's
        # activations and autograd graph alive until the garbage collector happens to run (GBs over a few batches)
        self._masks = Masks(attributor.concept, self._planner.below, self.n)
        # elements one member's backward pass handles at most (a probed activation or the input, whole batch)
        member_elements = max([self.input.numel(), *(self._below(name).numel() for name in self.probes)], default=1)
        self._gradients = Gradients(self._planner.targets, member_elements)
        self._propagation = Propagation(
            self._planner,
            self._masks,
            RootRelevance(self.root, start_layer, init_rel, self._masks, attributor.output_name),
            self._gradients,
            self.probes,
        )
        if not self.root.requires_grad:
            raise InputError(
                "the model output does not depend on the input through autograd (no gradient graph); "
                "check that the model does not detach or use torch.no_grad inside forward"
            )

    def _below(self, layer: str) -> torch.Tensor:
        return self._planner.below(layer)

    def _propagate(self, members: list[Member]) -> Iterator[tuple[int, dict[Any, Any]]]:
        """``(m, results)`` of each member under the run's path setting, recorded layers and heatmap choice."""
        propagate = self._propagation.sole_path if self.sole_path else self._propagation.parallel_paths
        return propagate(members, self.record, self.heatmap)

    def attribute(
        self,
        conditions: Condition | Mapping[str, Any] | Sequence[Condition | Mapping[str, Any]],
        *,
        record: Sequence[str] | None = None,
        heatmap: bool | None = None,
    ) -> Attribution:
        """Attribute every sample under every condition (``N * M`` rows, sample-major).

        ``record`` and ``heatmap`` override the run's settings for this call: e.g. record only the layers just below
        a conditioned layer without a heatmap, and the backward pass stops there. ``record`` must name layers given
        when the run started (in ``record`` or ``layers``).
        """
        if record is None and heatmap is None:
            return self._attribute(conditions)
        names = self.record if record is None else list(dict.fromkeys([record] if isinstance(record, str) else record))
        unknown = [name for name in names if name not in self.probes]
        if unknown:
            raise ConditionError(
                f"layer(s) {unknown} were not named when the run started; pass them in record=[...] or layers=[...]"
            )
        wanted = self.heatmap if heatmap is None else heatmap
        if wanted and not self.input.requires_grad:
            raise ConditionError("heatmap=True needs relevance at the input: start the run with input_grad=True")
        saved = self.record, self.heatmap
        self.record, self.heatmap = names, wanted
        try:
            return self._attribute(conditions)
        finally:
            self.record, self.heatmap = saved

    def _attribute(
        self, conditions: Condition | Mapping[str, Any] | Sequence[Condition | Mapping[str, Any]]
    ) -> Attribution:
        conditions = as_conditions(conditions, self.attributor.output_name)
        check = (
            self.heatmap and self.attributor.composite is not None and not self.attributor.checks.conservation_warned
        )
        self._gradients.kept_relevance = KeptRelevance() if check else None
        for condition in conditions:
            unknown = [name for name in condition.layers if name not in self.probes]
            if unknown:
                raise ConditionError(
                    f"layer(s) {unknown} were not named when the session was opened; pass them in "
                    "Attributor.session(..., layers=[...])"
                )
        m_total = len(conditions)
        device = self.on_device
        input_relevance = (
            torch.zeros(
                self.n, m_total, *self.input.shape[1:], dtype=self.input.dtype, device=device or self.input.device
            )
            if self.heatmap
            else None
        )
        relevances = {
            name: torch.zeros(
                self.n,
                m_total,
                *self._below(name).shape[1:],
                dtype=self._below(name).dtype,
                device=device or self._below(name).device,
            )
            for name in self.record
        }

        groups = self._propagation.groups(conditions)

        def store(m: int, results: Mapping[Any, torch.Tensor | None]) -> None:
            for key, value in results.items():
                if value is None:
                    continue
                target = input_relevance if key is None else relevances[key]
                assert target is not None
                target[:, m] = value.detach().to(target.device)

        for members in groups:
            for m, results in self._propagate(members):
                store(m, results)
        self._check_conservation()

        return Attribution(
            heatmap=None if input_relevance is None else input_relevance.flatten(0, 1).sum(1),
            input_relevance=None if input_relevance is None else input_relevance.flatten(0, 1),
            prediction=self._move(self.output if self.start_layer is None else self._below(self.start_layer)),
            activations={name: self._move(self._below(name)) for name in self.record},
            relevances={name: value.flatten(0, 1) for name, value in relevances.items()},
            n_samples=self.n,
            n_conditions=m_total,
        )

    def _check_conservation(self) -> None:
        """One :class:`~glocal.ConservationWarning` for the call when its heatmaps departed from their start."""
        kept, self._gradients.kept_relevance = self._gradients.kept_relevance, None
        choice = self.attributor.choice
        message = kept.message(None if choice is None else choice.architecture) if kept is not None else None
        if message is not None:
            self.attributor.checks.conservation_warned = True
            warn(message, ConservationWarning)

    @overload
    def region_relevance(  # type: ignore[overload-overlap]  # a str is a Sequence[str]: the first match wins
        self, layer: str, region: torch.Tensor, condition: Condition | Mapping[str, Any]
    ) -> torch.Tensor: ...

    @overload
    def region_relevance(
        self, layer: Sequence[str], region: torch.Tensor, condition: Condition | Mapping[str, Any]
    ) -> dict[str, torch.Tensor]: ...

    def region_relevance(
        self,
        layer: str | Sequence[str],
        region: torch.Tensor,
        condition: Condition | Mapping[str, Any],
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Relevance of each unit of ``layer`` that ends up inside an input ``region``.

        For a unit (or concept) ``c`` of ``layer`` this is ``sum_{i in region} R(x_i | theta, c)``: how much of the
        concept's conditional heatmap falls into the region. All units are computed with **one** extra backward pass,
        using that the relevance below ``layer`` is linear (see :func:`~glocal.attribution.regions.region_weights`).
        Sum the result with a concept's ``relevance()`` to rank concepts by the region.

        Parameters
        ----------
        layer
            The layer whose units are scored (named when the session was opened), or several layers: they share one
            backward pass to the layers and one double-backward pass.
        region
            ``(H, W)``, ``(N, H, W)`` or input-shaped ``(N, *input_shape)`` weights, usually 0/1.
        condition
            Targets (and optionally conditions on layers above ``layer``) that start the relevance.

        Returns
        -------
        torch.Tensor or dict
            ``(N, *layer_shape)``; summed over units it equals the region's share of the heatmap restricted to what
            passes ``layer``. For several layers, a dict from layer name to such a tensor.
        """
        (condition,) = as_conditions(condition, self.attributor.output_name)
        if not self.input.requires_grad:
            raise ConditionError("region_relevance needs relevance at the input: start the run with input_grad=True")
        names = [layer] if isinstance(layer, str) else list(dict.fromkeys(layer))
        for name in names:
            if name not in self.probes:
                raise ConditionError(f"layer {name!r} was not named when the session was opened; add it to `layers`")
            if name in condition.layers:
                raise ConditionError(
                    f"the condition already restricts {name!r}; region_relevance scores every unit of that layer"
                )
        region = expand_region(region, self.input)
        if len(names) == 1:
            # the relevance arriving at the layer, with the layer itself closed so the backward pass stops there
            probe_condition = Condition(targets=condition.targets, layers={**condition.layers, names[0]: ()})
            saved = self.record, self.heatmap
            self.record, self.heatmap = [*[r for r in self.record if r != names[0]], names[0]], False
            try:
                ((_, results),) = list(self._propagate([(0, probe_condition, self._planner.chain(probe_condition))]))
            finally:
                self.record, self.heatmap = saved
            arriving = {names[0]: results.get(names[0])}
        else:
            arriving = dict(self.attribute(condition, record=names, heatmap=False).relevances)
        belows = [self._below(name) for name in names]
        weights = region_weights(belows, self.input, region)
        out = {}
        for name, below, to_region in zip(names, belows, weights, strict=True):
            value = arriving[name]
            assert value is not None
            out[name] = self._move(torch.zeros_like(below) if to_region is None else to_region * value)
        return out[names[0]] if isinstance(layer, str) else out

    def _move(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        return tensor.to(self.on_device) if self.on_device is not None else tensor
