"""The conditional attribution engine: Concept Relevance Propagation on top of zennit's LRP rules.

Notation (as in the CRP paper): ``R`` is relevance, ``a`` an activation, ``theta`` a condition (a set of concepts per
layer), ``R(x | theta)`` the input relevance under ``theta``.

For N samples and M conditions the engine runs **one** forward pass, then for each group of conditions that agree on
everything above their lowest conditioned layer ``l``:

1. the backward pass from the output (or ``start_layer``) down to ``l`` -- shared by the group;
2. one backward pass below ``l`` per condition, with the relevance at ``l`` masked to that condition's concepts.

Step 2 is where concepts differ; its cost per concept is about one plain gradient backward through the layers below
``l``, because each LRP rule's modified forward terms were computed once in the forward pass (see
:mod:`glocal.attribution.rules`).
Where these passes are small (a small model, one sample), the group's conditions share one vectorised backward pass,
since then the fixed cost of a pass dominates. The relevance arriving at a layer under the conditions above it is
kept for the run's later calls: the next level of an attribution graph starts where the previous level ended.

``sole_path=True`` (zennit-crp's ``exclude_parallel``) lets relevance reach lower layers only through the conditioned
layers; the engine sorts the layers by their order in the forward pass, whatever order the user gave. With
``sole_path=False`` relevance also flows around conditioned layers (e.g. through skip connections); by linearity the
heatmap is then the part that bypasses ``l`` (computed once per group) plus the masked part through ``l``.
"""

from __future__ import annotations

import functools
import itertools
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, overload

import torch
import zennit.core

from ..errors import (
    CanonizerWarning,
    ConditionError,
    ConservationWarning,
    GradientDisabledError,
    InputError,
    TargetError,
    warn,
)
from ..lrp.composites import resolve as resolve_composite
from ..lrp.conservation import KeptRelevance, structure_problems
from .concepts import ChannelConcept, Concept
from .conditions import OUTPUT, Condition, Ids, as_conditions
from .inputs import check_gradients_enabled, check_input, dtype_problem
from .results import Attribution
from .session import Session

__all__ = ["Attributor", "InitRelevance", "Run"]

# members of one group share a vectorised backward pass when one member's pass takes less than this (its fixed
# costs dominate), up to this many elements of the largest probed tensor
_BATCH_BELOW_SECONDS = 1e-3
_BATCHED_ELEMENTS = 1 << 20
# relevances computed for the lowest conditioned layer of a call that a run keeps for later calls (elements)
_KEPT_ELEMENTS = 1 << 22

InitRelevance = Callable[[torch.Tensor], torch.Tensor] | torch.Tensor | float | int | None


class Attributor:
    """Conditional attributions (CRP) of a model under a zennit composite.

    Parameters
    ----------
    model
        The model to explain. It is left exactly as it was after every call (no hooks, flags or gradients remain).
    composite
        A zennit composite (rules and canonizers), e.g. ``EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])``;
        ``"auto"`` for the one :func:`glocal.lrp.composites.auto` picks for the model's architecture (kept, with the
        reason, in :attr:`choice`); ``None`` for plain gradients. An explicit composite is used as it is. The first
        forward pass emits a :class:`~glocal.CanonizerWarning` when the composite leaves batch norms unmerged or
        residual adds uncovered; a call whose heatmaps keep far more or less relevance than they started from emits
        a :class:`~glocal.ConservationWarning` (see :mod:`glocal.lrp.conservation`), once per attributor.
    concepts
        How layers are split into concepts: one :class:`~glocal.Concept` for every layer, or a mapping from
        layer name to concept (missing layers use :class:`~glocal.ChannelConcept`).
    output_name
        The key that names the model output in dict-form conditions (zennit-crp's ``"y"``).

    Examples
    --------
    >>> import torch
    >>> from zennit.composites import EpsilonPlus
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> attributor = Attributor(net, EpsilonPlus())
    >>> result = attributor(torch.rand(5, 4), [{"0": [c], "y": [1]} for c in range(3)])
    >>> result.input_relevance.shape
    torch.Size([15, 4])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        composite: zennit.core.Composite | str | None = None,
        *,
        concepts: Concept | Mapping[str, Concept] | None = None,
        output_name: str = OUTPUT,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if composite is not None and not isinstance(composite, zennit.core.Composite | str):
            raise TypeError(
                f"composite must be a zennit Composite (e.g. zennit.composites.EpsilonPlus()), 'auto' or None, got "
                f"{type(composite).__name__}"
            )
        self.model = model
        self.composite, self.choice = resolve_composite(model, composite)
        self._structure_checked = self.composite is None  # plain gradients: nothing to check
        self._conservation_warned = False
        self.concepts = concepts
        self.output_name = output_name

    def concept(self, layer: str) -> Concept:
        """The concept type used for ``layer``."""
        if self.concepts is None:
            return ChannelConcept()
        if isinstance(self.concepts, Mapping):
            return self.concepts.get(layer, ChannelConcept())
        return self.concepts

    def __call__(
        self,
        data: torch.Tensor,
        conditions: Condition | Mapping[str, Any] | Sequence[Condition | Mapping[str, Any]],
        *,
        record: Sequence[str] = (),
        start_layer: str | None = None,
        init_rel: InitRelevance = None,
        sole_path: bool = True,
        heatmap: bool = True,
        on_device: str | torch.device | None = None,
    ) -> Attribution:
        """Attribute every sample of ``data`` under every condition.

        Parameters
        ----------
        data
            ``(N, ...)`` input batch.
        conditions
            One condition or a list of M (typed :class:`~glocal.Condition` or zennit-crp dicts).
        record
            Layers whose activations and relevances to return.
        start_layer
            Start the backward pass at this layer's output instead of the model output.
        init_rel
            Initial relevance: a callable on the output (or start layer activation), a tensor, or a scalar. Targets,
            when given, then keep only their units of it. Default: the output itself.
        sole_path
            Relevance reaches lower layers only through the conditioned layers (zennit-crp's ``exclude_parallel``).
        heatmap
            Compute the input relevance. Without it the backward pass stops at the lowest recorded layer.
        on_device
            Where to put the results (default: where they were computed).

        Returns
        -------
        Attribution
            ``N * M`` rows in sample-major order.
        """
        chunks = list(
            self.iterate(
                data,
                conditions,
                record=record,
                start_layer=start_layer,
                init_rel=init_rel,
                sole_path=sole_path,
                heatmap=heatmap,
                on_device=on_device,
                chunk_size=None,
            )
        )
        return chunks[0]

    def iterate(
        self,
        data: torch.Tensor,
        conditions: Condition | Mapping[str, Any] | Sequence[Condition | Mapping[str, Any]],
        *,
        record: Sequence[str] = (),
        start_layer: str | None = None,
        init_rel: InitRelevance = None,
        sole_path: bool = True,
        heatmap: bool = True,
        on_device: str | torch.device | None = None,
        chunk_size: int | None = 32,
    ) -> Iterator[Attribution]:
        """Like :meth:`__call__`, but yield one :class:`Attribution` per chunk of ``chunk_size`` conditions.

        The forward pass runs once for all chunks; memory holds one chunk's results at a time. Abandoning the
        iterator half-way leaves the model unchanged.
        """
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of conditions, got {chunk_size}")
        condition_list = as_conditions(conditions, self.output_name)
        layers = [name for c in condition_list for name in c.layers]
        size = len(condition_list) if chunk_size is None else chunk_size
        with self.session(
            data,
            record=record,
            layers=layers,
            start_layer=start_layer,
            init_rel=init_rel,
            sole_path=sole_path,
            heatmap=heatmap,
            on_device=on_device,
        ) as run:
            for begin in range(0, len(condition_list), size):
                yield run.attribute(condition_list[begin : begin + size])

    @contextmanager
    def session(
        self,
        data: torch.Tensor,
        *,
        record: Sequence[str] = (),
        layers: Sequence[str] = (),
        start_layer: str | None = None,
        init_rel: InitRelevance = None,
        sole_path: bool = True,
        heatmap: bool = True,
        on_device: str | torch.device | None = None,
        input_grad: bool = True,
    ) -> Iterator[Run]:
        """Run the forward pass once and yield a :class:`Run` whose ``attribute(conditions)`` can be called often.

        ``layers`` lists the layers later conditions may name (besides ``record``). With ``input_grad=False`` (only
        without heatmaps) the input stays out of the autograd graph and the layers fed by it run without their rule:
        cheaper when only relevances at layers are needed. The model is restored when the block ends.

        Examples
        --------
        >>> from glocal import PerSample
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> with Attributor(net).session(torch.rand(2, 4), record=["0"]) as run:
        ...     plain = run.attribute({"y": [0]})
        ...     top = plain.relevances["0"].argmax(1)
        ...     focused = run.attribute(Condition(targets=0, layers={"0": PerSample(top[:, None])}))
        >>> focused.input_relevance.shape
        torch.Size([2, 4])
        """
        check_gradients_enabled()
        data = check_input(data)
        names = [record] if isinstance(record, str) else list(dict.fromkeys(record))
        probed = [*names, *layers, *([start_layer] if start_layer is not None else [])]
        with self.attached(probed) as begin:
            yield begin(
                data,
                record=names,
                start_layer=start_layer,
                init_rel=init_rel,
                sole_path=sole_path,
                heatmap=heatmap,
                on_device=on_device,
                input_grad=input_grad,
            )

    @contextmanager
    def attached(self, layers: Sequence[str]) -> Iterator[Callable[..., Run]]:
        """Attach rules, canonizers and probes on ``layers`` once; yield ``start(data, **options) -> Run``.

        For many batches in a row (e.g. a dataset scan): each ``start`` call runs one forward pass without
        re-attaching anything. ``options`` are those of :meth:`session`; ``record`` and ``start_layer`` must be
        among ``layers``. One more option, ``input_grad=False`` (with ``heatmap=False``), keeps the input out of the
        autograd graph: layers fed by the input directly then run without their rule, which saves time when only
        relevances at layers are needed (e.g. a dataset scan). The model is restored when the block ends.
        """
        check_gradients_enabled()
        with Session(self.model, self.composite, layers) as session:

            def start(
                data: torch.Tensor,
                *,
                record: Sequence[str] = (),
                start_layer: str | None = None,
                init_rel: InitRelevance = None,
                sole_path: bool = True,
                heatmap: bool = True,
                on_device: str | torch.device | None = None,
                input_grad: bool = True,
            ) -> Run:
                check_gradients_enabled()
                if heatmap and not input_grad:
                    raise ConditionError("heatmap=True needs input_grad=True: heatmaps are relevance at the input")
                names = [record] if isinstance(record, str) else list(dict.fromkeys(record))
                missing = [n for n in [*names, *([start_layer] if start_layer else [])] if n not in session.probes]
                if missing:
                    raise ConditionError(f"layers {missing} were not attached; pass them in attached(layers=...)")
                return Run(
                    self,
                    session,
                    check_input(data),
                    names,
                    start_layer,
                    init_rel,
                    sole_path,
                    heatmap,
                    on_device,
                    input_grad=input_grad,
                )

            yield start


class Run:
    """One forward pass, and the backward passes of any number of condition lists (see :meth:`Attributor.session`)."""

    def __init__(
        self,
        attributor: Attributor,
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
        self.order = {name: probe.order for name, probe in self.probes.items()}
        if not attributor._structure_checked:  # once per attributor, while the canonizers are applied
            attributor._structure_checked = True
            problems = structure_problems(attributor.model, self.output, self.input)
            if problems is not None:
                warn(problems, CanonizerWarning)
        self._kept_relevance: KeptRelevance | None = None  # of the current call's heatmap rows
        self._masks: dict[tuple[str, Ids], torch.Tensor] = {}
        self._feeds_cache: dict[tuple[str, str], bool] = {}
        # relevance arriving at a layer (or the input: None) under a key of the conditions above it (_cached_grads)
        self._arriving: dict[tuple[Any, ...], torch.Tensor | None] = {}
        self._kept_elements = 0  # of member results in _arriving, capped at _KEPT_ELEMENTS
        self._around_cache: dict[tuple[str | None, str], bool] = {}
        # elements one member's backward pass handles at most (a probed activation or the input, whole batch)
        self._member_elements = max(
            [self.input.numel(), *(self._below(name).numel() for name in self.probes)], default=1
        )
        self._batch_members = True
        self._pass_seconds: float | None = None  # how long one member's backward pass took (the first one timed)
        if start_layer is not None:
            self.root = self._below(start_layer)
        else:
            self.root = self.output
        if not self.root.requires_grad:
            raise InputError(
                "the model output does not depend on the input through autograd (no gradient graph); "
                "check that the model does not detach or use torch.no_grad inside forward"
            )

    # -- tensors -----------------------------------------------------------------------------------------------------

    def _below(self, layer: str) -> torch.Tensor:
        tensor = self.probes[layer].below
        assert tensor is not None
        return tensor

    def _above(self, layer: str) -> torch.Tensor:
        tensor = self.probes[layer].above
        assert tensor is not None
        return tensor

    def _shape(self, layer: str) -> torch.Size:
        return self._below(layer).shape[1:]

    def _mask(self, layer: str, ids: Ids, condition: Condition) -> torch.Tensor:
        """Mask ``(N or 1, *shape)`` letting ``ids`` of ``layer`` through."""
        key = (layer, ids)
        if key not in self._masks:
            concept = self.attributor.concept(layer)
            shape = self._shape(layer)
            below = self._below(layer)
            per_sample = condition.per_sample(ids, self.n, f"layer {layer!r}")
            if isinstance(ids, tuple) and not getattr(concept, "varies_per_sample", False):
                mask = concept.mask(list(ids), shape).unsqueeze(0)
            else:
                mask = torch.stack([concept.mask(list(i), shape, sample=n) for n, i in enumerate(per_sample)])
            self._masks[key] = mask.to(device=below.device, dtype=below.dtype)
        return self._masks[key]

    # -- relevance at the root ---------------------------------------------------------------------------------------

    def _initial(self, base: torch.Tensor) -> torch.Tensor:
        init = self.init_rel
        if init is None:
            return base.detach()
        if callable(init):
            value = init(base.detach())
        elif isinstance(init, torch.Tensor):
            value = init
        elif isinstance(init, int | float):
            value = torch.full_like(base, float(init))
        else:
            raise TypeError(f"init_rel must be a callable, a tensor or a number, got {type(init).__name__}")
        value = torch.as_tensor(value).to(base)
        try:
            return value.expand_as(base).detach()
        except RuntimeError:
            raise InputError(
                f"init_rel has shape {tuple(value.shape)} but the relevance starts at a tensor of shape "
                f"{tuple(base.shape)}; give a tensor of that shape (or broadcastable to it)"
            ) from None

    def _root_relevance(self, condition: Condition) -> torch.Tensor:
        base = self.root
        relevance = self._initial(base)
        if self.start_layer is not None:
            if condition.targets is not None:
                warn(
                    f"the condition's targets {condition.targets} have no effect because the backward pass starts at "
                    f"start_layer {self.start_layer!r}; drop the targets or the start_layer"
                )
            if self.start_layer in condition.layers:
                relevance = relevance * self._mask(self.start_layer, condition.layers[self.start_layer], condition)
            return relevance
        if condition.targets is None:
            if self.init_rel is None:
                raise ConditionError(
                    f"the condition {condition.to_dict(self.attributor.output_name)} has no targets. Give the output "
                    f"units to explain (e.g. {{'{self.attributor.output_name}': [class_index]}} or "
                    "Condition(targets=...)), an init_rel, or a start_layer."
                )
            return relevance
        n_outputs = base.shape[1] if base.dim() > 1 else 1
        select = torch.zeros(self.n, n_outputs, device=base.device, dtype=base.dtype)
        for n, targets in enumerate(condition.per_sample(condition.targets, self.n, "targets")):
            for target in targets:
                if not 0 <= target < n_outputs:
                    raise TargetError(
                        f"target {target} is out of range: the model has {n_outputs} outputs (0 to {n_outputs - 1})"
                    )
            select[n, list(targets)] = 1.0
        return relevance * select.view(self.n, n_outputs, *([1] * (base.dim() - 2)))

    # -- attribution of one chunk ------------------------------------------------------------------------------------

    def _chain(self, condition: Condition) -> list[str]:
        """Conditioned layers below the start, latest in the forward pass first."""
        layers = [name for name in condition.layers if name != self.start_layer]
        if self.start_layer is not None:
            start = self.order[self.start_layer]
            layers = [name for name in layers if self.order[name] < start]
        return sorted(layers, key=lambda name: self.order[name], reverse=True)

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
        check = self.heatmap and self.attributor.composite is not None and not self.attributor._conservation_warned
        self._kept_relevance = KeptRelevance() if check else None
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
                *self._shape(name),
                dtype=self._below(name).dtype,
                device=device or self._below(name).device,
            )
            for name in self.record
        }

        groups: dict[Any, list[tuple[int, Condition, list[str]]]] = {}
        for m, condition in enumerate(conditions):
            chain = self._chain(condition)
            for name, ids in condition.layers.items():  # validate ids early, with the layer named in the error
                self._mask(name, ids, condition)
            upper = tuple((name, condition.layers[name]) for name in chain[:-1])
            key = (
                condition.targets,
                upper,
                chain[-1] if chain else None,
                self.start_layer and condition.layers.get(self.start_layer),
            )
            groups.setdefault(key, []).append((m, condition, chain))

        def store(m: int, results: Mapping[Any, torch.Tensor | None]) -> None:
            for key, value in results.items():
                if value is None:
                    continue
                target = input_relevance if key is None else relevances[key]
                assert target is not None
                target[:, m] = value.detach().to(target.device)

        for members in groups.values():
            propagate = self._sole_path if self.sole_path else self._parallel_paths
            for m, results in propagate(members):
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
        kept, self._kept_relevance = self._kept_relevance, None
        choice = self.attributor.choice
        message = kept.message(None if choice is None else choice.architecture) if kept is not None else None
        if message is not None:
            self.attributor._conservation_warned = True
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
        using that the relevance below ``layer`` is linear: with ``L`` the map from relevance at the layer to the
        input, ``<1_region, L(mask_c * R)> = <L^T 1_region, mask_c * R>``, and ``L^T 1_region`` is one
        double-backward pass. Sum the result with a concept's ``relevance()`` to rank concepts by the region.

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
        region = torch.as_tensor(region).to(self.input)
        spatial = self.input.shape[2:]
        if region.shape == spatial or (region.shape[1:] == spatial and region.dim() == len(spatial) + 1):
            region = region.view(-1, 1, *spatial) if region.dim() > len(spatial) else region.view(1, 1, *spatial)
        try:
            region = region.expand_as(self.input)
        except RuntimeError:
            raise InputError(
                f"the region has shape {tuple(region.shape)}; it must match the input's spatial shape "
                f"{tuple(spatial)} (optionally with a batch dimension) or the input shape {tuple(self.input.shape)}"
            ) from None
        if len(names) == 1:
            # the relevance arriving at the layer, with the layer itself closed so the backward pass stops there
            probe_condition = Condition(targets=condition.targets, layers={**condition.layers, names[0]: ()})
            propagate = self._sole_path if self.sole_path else self._parallel_paths
            saved = self.record, self.heatmap
            self.record, self.heatmap = [*[r for r in self.record if r != names[0]], names[0]], False
            try:
                ((_, results),) = list(propagate([(0, probe_condition, self._chain(probe_condition))]))
            finally:
                self.record, self.heatmap = saved
            arriving = {names[0]: results.get(names[0])}
        else:
            arriving = dict(self.attribute(condition, record=names, heatmap=False).relevances)
        belows = [self._below(name) for name in names]
        probes = [torch.zeros_like(below, requires_grad=True) for below in belows]
        with torch.enable_grad():
            (lowered,) = torch.autograd.grad(belows, self.input, probes, retain_graph=True, create_graph=True)
            transposed = torch.autograd.grad((lowered * region).sum(), probes, retain_graph=True, allow_unused=True)
        out = {}
        for name, probe, to_region in zip(names, probes, transposed, strict=True):
            value = arriving[name]
            assert value is not None
            out[name] = self._move(torch.zeros_like(probe) if to_region is None else to_region * value)
        return out[names[0]] if isinstance(layer, str) else out

    def _move(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        return tensor.to(self.on_device) if self.on_device is not None else tensor

    def _grad(
        self, source: torch.Tensor, targets: Mapping[Any, torch.Tensor], relevance: torch.Tensor
    ) -> dict[Any, torch.Tensor | None]:
        if not targets:
            return {}
        grads = torch.autograd.grad(
            source, list(targets.values()), grad_outputs=relevance, retain_graph=True, allow_unused=True
        )
        return dict(zip(targets.keys(), grads, strict=True))

    def _member_grads(
        self,
        source: torch.Tensor,
        names: Sequence[str | None],
        relevances: Sequence[Callable[[], torch.Tensor]],
        keys: Sequence[tuple[Any, ...] | None] | None = None,
    ) -> Iterator[dict[Any, torch.Tensor | None]]:
        """The relevance arriving at ``names`` (``None``: the input) from ``source`` for each of ``relevances`` (each
        computed only when its pass runs).

        Members whose backward passes are quick share one vectorised backward pass (``is_grads_batched``): for a
        small model the fixed cost of a pass, not the arithmetic, dominates. The run times its first member pass;
        below ``_BATCH_BELOW_SECONDS`` later members go in batches of at most ``_BATCHED_ELEMENTS`` elements of the
        largest tensor the run probed, so memory stays bounded. A model whose backward pass cannot be vectorised
        falls back to one pass per member for the rest of the run. With ``keys``
        (see :meth:`_cached_grads`), results this run already has are reused and new ones are kept, up to
        ``_KEPT_ELEMENTS`` elements, for later calls (a graph's next level starts where this one ended).
        """
        pending: list[tuple[tuple[Any, ...] | None, torch.Tensor]] = []
        for relevance, key in zip(relevances, keys if keys is not None else itertools.repeat(None), strict=False):
            if key is not None and all((key, name) in self._arriving for name in names):
                yield from self._batched_grads(source, names, pending)
                pending = []
                yield {name: self._arriving[key, name] for name in names}
                continue
            pending.append((key, relevance()))
            if len(pending) >= self._batch_size(names):
                yield from self._batched_grads(source, names, pending)
                pending = []
        yield from self._batched_grads(source, names, pending)

    def _batch_size(self, names: Sequence[str | None]) -> int:
        quick = self._pass_seconds is not None and self._pass_seconds < _BATCH_BELOW_SECONDS
        if not (quick and names and self._batch_members):
            return 1
        return max(1, _BATCHED_ELEMENTS // self._member_elements)

    def _batched_grads(
        self,
        source: torch.Tensor,
        names: Sequence[str | None],
        pending: list[tuple[tuple[Any, ...] | None, torch.Tensor]],
    ) -> list[dict[Any, torch.Tensor | None]]:
        if not pending:
            return []
        targets = self._targets(names)
        results: list[dict[Any, torch.Tensor | None]] | None = None
        relevances = [relevance for _, relevance in pending]
        if len(pending) > 1 and names and self._batch_members and not any(r.requires_grad for r in relevances):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    batched = torch.autograd.grad(
                        source,
                        list(targets.values()),
                        grad_outputs=torch.stack(relevances),
                        retain_graph=True,
                        allow_unused=True,
                        is_grads_batched=True,
                    )
            except (RuntimeError, NotImplementedError):
                self._batch_members = False
            else:
                for w in caught:
                    if "performance drop" in str(w.message):
                        self._batch_members = False  # an op without a vectorised rule: later, a plain loop
                    else:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                results = [
                    {name: None if g is None else g[i] for name, g in zip(names, batched, strict=True)}
                    for i in range(len(pending))
                ]
        if results is None:
            results = []
            for relevance in relevances:
                start = time.perf_counter()
                results.append(self._grad(source, targets, relevance))
                if self._pass_seconds is None and names:  # the first pass tells whether batching pays off
                    self._pass_seconds = time.perf_counter() - start
        if self._kept_relevance is not None and None in names:  # the heatmap rows' sums, for the conservation check
            for relevance, grads in zip(relevances, results, strict=True):
                heatmap = grads.get(None)
                if heatmap is not None:
                    self._kept_relevance.add(relevance, heatmap)
        for (key, _), grads in zip(pending, results, strict=True):
            # relevance at layers is what later calls start from; heatmaps are not kept
            kept = {name: grad for name, grad in grads.items() if name is not None}
            size = sum(g.numel() for g in kept.values() if g is not None)
            if key is not None and kept and self._kept_elements + size <= _KEPT_ELEMENTS:
                self._kept_elements += size
                for name, grad in kept.items():
                    self._arriving[key, name] = grad
        return results

    def _records_between(self, upper: int | None, lower: str | None, chain: Sequence[str]) -> list[str]:
        """Recorded layers (not in ``chain``) that ran before order ``upper`` and lie on a path from ``lower``.

        In a sole-path backward segment that ends at conditioned layer ``lower``, only layers fed by ``lower`` receive
        relevance; a layer on a parallel branch would pass relevance around it. ``None`` leaves a side open.
        """
        out = []
        for name in self.record:
            if name in chain or name == self.start_layer:
                continue
            order = self.order[name]
            if upper is not None and order >= upper:
                continue
            if lower is not None and (order <= self.order[lower] or not self._feeds(lower, name)):
                continue
            out.append(name)
        return out

    def _feeds(self, lower: str, upper: str) -> bool:
        """Whether layer ``lower``'s output reaches layer ``upper``'s in the forward graph (walks autograd nodes)."""
        key = (lower, upper)
        if key not in self._feeds_cache:
            above = self._above(lower)
            goal = above.grad_fn
            start = self._below(upper).grad_fn
            seen: set[Any] = set()
            stack = [start]
            found = False
            while stack and not found:
                node = stack.pop()
                if node is None or node in seen:
                    continue
                if node is goal if goal is not None else getattr(node, "variable", None) is above:
                    found = True  # the gate's node, or for a layer that starts the graph, its leaf's node
                    break
                seen.add(node)
                stack.extend(next_node for next_node, _ in node.next_functions)
            self._feeds_cache[key] = found
        return self._feeds_cache[key]

    def _start_records(self, condition: Condition) -> dict[Any, torch.Tensor | None]:
        if self.start_layer is not None and self.start_layer in self.record:
            return {self.start_layer: self._initial(self.root)}
        return {}

    def _sole_path(self, members: list[tuple[int, Condition, list[str]]]) -> Iterator[tuple[int, dict[Any, Any]]]:
        _, first, chain = members[0]
        # the relevance leaving the segment's source, computed only when a pass needs it (not when kept)
        relevance: Callable[[], torch.Tensor] = functools.cache(functools.partial(self._root_relevance, first))
        source = self.root
        top = self.order[self.start_layer] if self.start_layer is not None else None
        shared: dict[Any, torch.Tensor | None] = self._start_records(first)
        upper_order = top
        base = (first.targets, self.start_layer and first.layers.get(self.start_layer))
        for index, layer in enumerate(chain):
            # the relevance arriving at a layer depends only on the conditions above it: later calls of this run
            # (e.g. the next level of an attribution graph) reuse it instead of running that backward pass again
            names: list[str | None] = [layer, *self._records_between(upper_order, layer, chain)]
            key = (*base, tuple((name, first.layers[name]) for name in chain[:index]))
            grads = self._cached_grads(key, source, relevance, names)
            arriving = grads.pop(layer)
            if arriving is None:
                above = (
                    "the model output"
                    if index == 0 and self.start_layer is None
                    else repr(chain[index - 1] if index else self.start_layer)
                )
                raise ConditionError(
                    f"with sole_path=True relevance must reach layer {layer!r} from {above}, but no path leads there: "
                    f"the conditioned layers {chain} are not on one path through the model. Condition on layers "
                    "that feed each other, or pass sole_path=False."
                )
            shared.update(grads)
            if layer in self.record:
                shared[layer] = arriving
            if index < len(chain) - 1:
                relevance = functools.partial(self._masked, arriving, layer, first)
                source = self._below(layer)
            upper_order = self.order[layer]
        lower: list[str | None] = [*self._records_between(upper_order, None, chain)]
        if self.heatmap:
            lower.append(None)
        relevances: list[Callable[[], torch.Tensor]]
        if chain:
            lowest = chain[-1]
            assert arriving is not None
            member_source = self._below(lowest)
            relevances = [functools.partial(self._masked, arriving, lowest, c) for _, c, _ in members]
        else:  # no conditioned layer: every member is the same condition
            member_source = source
            relevances = [relevance] * len(members)
        keys = [(*base, tuple((name, c.layers[name]) for name in chain)) for _, c, _ in members]
        for (m, _, _), grads in zip(members, self._member_grads(member_source, lower, relevances, keys), strict=True):
            yield m, {**shared, **grads}

    def _masked(self, relevance: torch.Tensor, layer: str, condition: Condition) -> torch.Tensor:
        return relevance * self._mask(layer, condition.layers[layer], condition)

    def _cached_grads(
        self,
        key: tuple[Any, ...],
        source: torch.Tensor,
        relevance: Callable[[], torch.Tensor],
        names: Sequence[str | None],
    ) -> dict[str | None, torch.Tensor | None]:
        """The relevance arriving at ``names`` (``None``: the input) from ``source``, reusing what this run has seen.

        ``key`` identifies ``relevance`` (the targets, the start layer's concepts and the conditions down to the
        layer whose output ``source`` is): the same key and name always mean the same gradient.
        """
        missing = [name for name in names if (key, name) not in self._arriving]
        if missing:
            for name, grad in self._grad(source, self._targets(missing), relevance()).items():
                self._arriving[key, name] = grad
        return {name: self._arriving[key, name] for name in names}

    def _targets(self, names: Sequence[str | None]) -> dict[str | None, torch.Tensor]:
        return {name: self.input if name is None else self._above(name) for name in names}

    def _around(self, target: str | None, blocked: str) -> bool:
        """Whether relevance from the root reaches layer ``target`` (``None``: the input) avoiding layer ``blocked``."""
        key = (target, blocked)
        if key not in self._around_cache:
            goal = self.input if target is None else self._above(target)
            goal_node = goal.grad_fn
            wall = self._above(blocked).grad_fn
            seen: set[Any] = set()
            stack = [self.root.grad_fn]
            found = False
            while stack and not found:
                node = stack.pop()
                if node is None or node in seen or node is wall:
                    continue
                if node is goal_node if goal_node is not None else getattr(node, "variable", None) is goal:
                    found = True
                    break
                seen.add(node)
                stack.extend(next_node for next_node, _ in node.next_functions)
            self._around_cache[key] = found
        return self._around_cache[key]

    def _parallel_is_sole(self, chain: list[str]) -> bool:
        """Whether no relevance can pass around the conditioned layers: then both path settings agree exactly.

        Every path from the root to each conditioned layer crosses the one above it, and every recorded layer (and
        the input, for heatmaps) lies below the lowest one and is reached only through it. Without conditioned
        layers there is nothing to pass around.
        """
        if not chain:
            return True
        if self.start_layer is not None:
            return False
        lowest = chain[-1]
        if any(self._around(lower, upper) for upper, lower in itertools.pairwise(chain)):
            return False
        for name in self.record:
            if name in chain or self.order[name] >= self.order[lowest] or self._around(name, lowest):
                return False
        return not (self.heatmap and self._around(None, lowest))

    def _parallel_paths(self, members: list[tuple[int, Condition, list[str]]]) -> Iterator[tuple[int, dict[Any, Any]]]:
        _, first, chain = members[0]
        if self._parallel_is_sole(chain):
            # nothing flows around the condition: the sole-path computation is the same and reuses cached prefixes
            yield from self._sole_path(members)
            return
        relevance = self._root_relevance(first)
        lowest = chain[-1] if chain else None
        targets: dict[Any, torch.Tensor] = {}
        if lowest is not None:
            targets[lowest] = self._above(lowest)
        for name in self.record:
            if name != self.start_layer:
                targets[name] = self._above(name)
        if self.heatmap:
            targets[None] = self.input
        masked_layers = []
        try:
            for layer in chain[:-1]:
                self.probes[layer].mask = self._mask(layer, first.layers[layer], first)
                masked_layers.append(layer)
            if lowest is not None:
                self.probes[lowest].mask = torch.zeros((), dtype=self.root.dtype, device=self.root.device)
                masked_layers.append(lowest)
            bypass = self._grad(self.root, targets, relevance)
        finally:
            for layer in masked_layers:
                self.probes[layer].mask = None
        bypass.update(self._start_records(first))
        if lowest is None:
            for m, _, _ in members:
                yield m, bypass
            return
        arriving = bypass.pop(lowest)
        if lowest in self.record:
            bypass[lowest] = arriving
        below_names = [
            name for name in self.record if name != self.start_layer and self.order[name] < self.order[lowest]
        ]
        if arriving is None:
            for m, _, _ in members:
                yield m, dict(bypass)
            return
        names: list[str | None] = [*below_names]
        if self.heatmap:
            names.append(None)
        relevances = [functools.partial(self._masked, arriving, lowest, c) for _, c, _ in members]
        for (m, _, _), grads in zip(members, self._member_grads(self._below(lowest), names, relevances), strict=True):
            results = dict(bypass)
            for key, value in grads.items():
                if value is None:
                    continue
                previous = results.get(key)
                results[key] = value if previous is None else previous + value
            yield m, results
