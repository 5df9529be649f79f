"""zennit-crp's ``CondAttribution`` on glocal's engine (exported by :mod:`glocal.compat.attribution`).

Signatures, defaults and the meaning of the results are zennit-crp's (version 0.6): conditions are dicts
``{"layer": [concept ids], "y": [targets]}``; when ``len(data) == len(conditions)`` sample ``i`` is paired with
condition ``i``, otherwise every sample is attributed under every condition, sample-major (row ``n * M + m``); the
relevance recorded at a conditioned layer is the relevance *after* the layer's mask.

Deliberate differences from zennit-crp
--------------------------------------
* **Order.** Rows always follow the given conditions, sample-major. zennit-crp with ``exclude_parallel=True`` groups
  conditions by their set of layer names and concatenates the groups, re-ordering the rows (and mis-pairing samples
  and conditions when ``len(data) == len(conditions)``).
* **generate.** Every sample is attributed under every condition; results come sample by sample, each in batches of
  ``batch_size`` conditions, so their concatenation is ``__call__``'s all-pairs result. zennit-crp silently used only
  the first sample. Condition dicts may name different layers here, also with ``exclude_parallel=True``.
* **The model and the data are left alone.** Hooks and canonizers are removed even when an error is raised;
  ``no_param_grad`` is accepted but never changes the model's ``requires_grad`` flags (the engine asks autograd only
  for the tensors it needs, so no parameter gradient is computed either way); ``data.grad`` is never written
  (``overwrite_data_grad`` is accepted and has nothing to do), and ``data`` need not require gradients.
* **Relevance at conditioned layers with ``exclude_parallel=True``.** zennit-crp's recorded value there is twice the
  masked relevance (autograd accumulates it into ``.grad`` once in each of two backward calls); here it is the masked
  relevance, as with ``exclude_parallel=False``. The relevance at a conditioned ``start_layer`` is the initial
  relevance times the mask, as in zennit-crp.
* **Layer order with ``exclude_parallel=True``.** Conditioned layers may be named in any order (zennit-crp required
  the last layer first); glocal sorts them by the forward pass.
* **init_rel.** A float scalar is used (zennit-crp silently ignored scalars that are not ``int``). A tensor may have
  zennit-crp's ``N * M`` rows (one per result row) or be broadcastable to the ``N`` samples' output. A callable receives
  the ``N`` distinct samples' output ``(N, ...)`` instead of ``N * M`` repeated rows; callables acting row by row
  give the same numbers.
* **Errors instead of silence.** Unknown layer names raise :class:`~glocal.errors.LayerError` (zennit-crp warned and
  skipped unknown record layers).
* **mask_map.** zennit-crp's default (``ChannelConcept.mask``, this module's or crp's) becomes
  :class:`glocal.ChannelConcept`. Any other mask function is checked first on random gradients: when it multiplies
  row ``batch_id`` by a fixed mask and leaves the other rows alone (``ChannelConcept.mask_rf`` and masks in the style
  of zennit-crp's), the engine evaluates it once per distinct concept-id value on a tensor of ones; otherwise (a mask
  that depends on the gradient's values, say) the call runs zennit-crp's steps with hooks, where the function sees
  the real gradient.
* **Results are detached tensors**; ``on_device`` also moves ``prediction``. The result dicts list ``record_layer``,
  then the conditioned layers, then ``start_layer`` (zennit-crp: the order in which the layers ran).

Subclasses that override a step
-------------------------------
zennit-crp's override points ``broadcast``, ``relevance_init``, ``backward`` and ``heatmap_modifier`` are methods here
too, with zennit-crp's signatures and behaviour. When a subclass (or an instance) replaces any of them, ``__call__`` and
``generate`` run zennit-crp's steps with hooks on the model (:mod:`glocal.compat.hooked`) and call the replacements
where zennit-crp calls them; otherwise they run on glocal's engine and the methods are not called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import zennit.core

from ..attribution.concepts import ChannelConcept as _GlocalChannelConcept
from ..attribution.concepts import Concept
from ..attribution.conditions import OUTPUT, Condition, Ids, PerSample
from ..attribution.engine import Attributor, InitRelevance
from ..attribution.inputs import check_gradients_enabled
from ..attribution.results import Attribution
from ..errors import ConceptError, ConditionError, InputError, LayerError
from . import hooked
from .concepts import ChannelConcept, MaskFunction
from .helper import get_output_shapes

__all__ = ["AttributionResults", "CondAttribution", "MaskFunction", "MaskMap", "attrResult"]

MaskMap = Callable[[int, Any, str | None], MaskFunction]
"""zennit-crp's mask factory: ``mask_map(batch_id, concept_ids, layer_name) -> MaskFunction``."""


class AttributionResults(NamedTuple):
    """zennit-crp's result tuple (``attrResult``); every tensor has one row per result row.

    Attributes
    ----------
    heatmap
        ``(rows, *spatial)``: the input relevance summed over dimension 1.
    activations
        Layer name to ``(rows, ...)`` activation (repeated for the rows of one sample).
    relevances
        Layer name to ``(rows, ...)`` relevance at the layer's output; after the mask at conditioned layers.
    prediction
        ``(rows, ...)``: the model output, or the ``start_layer``'s activation (repeated like ``activations``).
    """

    heatmap: torch.Tensor
    activations: dict[str, torch.Tensor]
    relevances: dict[str, torch.Tensor]
    prediction: torch.Tensor


attrResult = AttributionResults
"""zennit-crp's name for :class:`AttributionResults`."""


# -- masks -----------------------------------------------------------------------------------------------------------


def _is_channel_mask(mask_map: Any) -> bool:
    """Whether ``mask_map`` is zennit-crp's default ``ChannelConcept.mask`` (this module's or crp's own)."""
    if mask_map is ChannelConcept.mask:
        return True
    return getattr(mask_map, "__qualname__", None) == "ChannelConcept.mask" and getattr(
        mask_map, "__module__", None
    ) in ("crp.concepts", ChannelConcept.__module__)


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a condition value (lists, dicts, arrays, tensors), equal for equal values."""
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, Mapping):
        items = [(_freeze(key), _freeze(item)) for key, item in value.items()]
        return ("mapping", tuple(sorted(items, key=repr)))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_freeze(item) for item in value))
    hash(value)
    return value


class _MaskMapConcept:
    """A glocal :class:`~glocal.Concept` made of a zennit-crp mask function.

    zennit-crp's condition values (channel lists, ``{channel: neurons}`` maps, ...) are opaque to glocal, so each
    distinct value gets an integer *token*; glocal's conditions carry the token and :meth:`mask` turns it back into
    ``mask_map(0, value, layer)`` applied to a one-sample tensor of ones.
    """

    def __init__(self, mask_map: MaskMap, layer: str) -> None:
        self.mask_map = mask_map
        self.layer = layer
        self.values: list[Any] = []
        self._tokens: dict[Hashable, int] = {}

    def token(self, value: Any) -> int:
        """The integer that stands for the condition value ``value`` at this layer."""
        try:
            key = _freeze(value)
        except TypeError:  # unhashable and unknown: a token of its own
            self.values.append(value)
            return len(self.values) - 1
        if key not in self._tokens:
            self._tokens[key] = len(self.values)
            self.values.append(value)
        return self._tokens[key]

    def count(self, shape: torch.Size) -> int:
        return int(shape[0]) if len(shape) else 1

    def mask(self, ids: Sequence[int], shape: torch.Size, sample: int = 0) -> torch.Tensor:
        mask = torch.ones(shape)
        for token in ids:
            function = self.mask_map(0, self.values[token], self.layer)
            masked = function(torch.ones(1, *shape))
            if not isinstance(masked, torch.Tensor) or tuple(masked.shape) != (1, *shape):
                raise ConceptError(
                    f"the mask_map function for layer {self.layer!r} must return the gradient it was given, shaped "
                    f"{(1, *tuple(shape))}, got {type(masked).__name__}"
                    f"{'' if not isinstance(masked, torch.Tensor) else ' of shape ' + str(tuple(masked.shape))}"
                )
            mask = mask * masked[0].detach().to(mask)
        return mask

    def relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance.flatten(2).sum(-1) if relevance.dim() > 2 else relevance

    def __repr__(self) -> str:
        return f"_MaskMapConcept({getattr(self.mask_map, '__qualname__', self.mask_map)!r}, layer={self.layer!r})"


def _multiplies(factory: MaskMap, value: Any, layer: str, shape: torch.Size) -> bool:
    """Whether ``factory(batch_id, value, layer)`` multiplies row ``batch_id`` of any gradient by one fixed mask and
    leaves the other rows alone (what glocal's engine needs; zennit-crp's channel and neuron masks do)."""
    gradient = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)) + 0.5
    fixed = factory(0, value, layer)(torch.ones(1, *shape))
    masked = factory(1, value, layer)(gradient.clone())
    if not isinstance(fixed, torch.Tensor) or not isinstance(masked, torch.Tensor) or masked.shape != gradient.shape:
        return False
    return bool(torch.allclose(masked[0], gradient[0]) and torch.allclose(masked[1], gradient[1] * fixed[0].to(masked)))


class _Translator:
    """Turns zennit-crp's condition dicts and ``mask_map`` into glocal conditions and concepts."""

    def __init__(self, mask_map: MaskMap | Mapping[str, MaskMap], output_name: str) -> None:
        if not (callable(mask_map) or isinstance(mask_map, Mapping)):
            raise TypeError(
                f"mask_map must be a mask function like ChannelConcept.mask or a dict from layer name to one, got "
                f"{type(mask_map).__name__}"
            )
        self.mask_map = mask_map
        self.output_name = output_name
        self.concepts: dict[str, Concept] = {}

    def concept(self, layer: str) -> Concept:
        if layer not in self.concepts:
            if isinstance(self.mask_map, Mapping):
                if layer not in self.mask_map:
                    raise LayerError(
                        f"mask_map has no entry for layer {layer!r}, which a condition names; add one, e.g. "
                        f"mask_map={{..., {layer!r}: ChannelConcept.mask}}"
                    )
                function = self.mask_map[layer]
            else:
                function = self.mask_map
            concept: Concept = (
                _GlocalChannelConcept() if _is_channel_mask(function) else _MaskMapConcept(function, layer)
            )
            self.concepts[layer] = concept
        return self.concepts[layer]

    def condition(self, mapping: Any) -> Condition:
        if not isinstance(mapping, Mapping):
            raise ConditionError(
                f"each condition must be a dict like {{'features.28': [50], '{self.output_name}': [1]}}, "
                f"got {mapping!r}"
            )
        layers: dict[str, Any] = {}
        for name, value in mapping.items():
            if name == self.output_name:
                continue
            if not isinstance(name, str):
                raise ConditionError(f"condition keys must be layer names (strings), got {name!r}")
            concept = self.concept(name)
            layers[name] = (concept.token(value),) if isinstance(concept, _MaskMapConcept) else value
        return Condition(targets=mapping.get(self.output_name), layers=layers)

    def engine_can_mask(self, model: torch.nn.Module, sample: torch.Tensor, mappings: Sequence[Any]) -> bool:
        """Whether every mask function the conditions use is a fixed 0/1-style multiplication per row.

        Other mask functions (say, one that keeps the largest gradient values) depend on the relevance itself, which
        glocal's engine does not pass through them; those calls run zennit-crp's steps instead. Checked on random
        gradients shaped like each layer's output (one forward pass of ``sample``), only for mask functions other
        than ``ChannelConcept.mask``.
        """
        custom = {
            name
            for mapping in mappings
            for name in mapping
            if name != self.output_name and isinstance(self.concept(name), _MaskMapConcept)
        }
        if not custom:
            return True
        shapes = get_output_shapes(model, sample, sorted(custom))
        checked: set[tuple[str, Hashable]] = set()
        for mapping in mappings:
            for name, value in mapping.items():
                if name not in custom or name not in shapes:
                    continue
                try:
                    key: tuple[str, Hashable] = (name, _freeze(value))
                except TypeError:
                    key = (name, id(value))
                if key in checked:
                    continue
                checked.add(key)
                concept = self.concept(name)
                assert isinstance(concept, _MaskMapConcept)
                if not _multiplies(concept.mask_map, value, name, shapes[name]):
                    return False
        return True


# -- results ---------------------------------------------------------------------------------------------------------


def _plain(ids: Ids | None) -> tuple[int, ...]:
    assert isinstance(ids, tuple)
    return ids


def _scatter(target: torch.Tensor | None, value: torch.Tensor, index: Sequence[int], size: int) -> torch.Tensor:
    if target is None:
        target = torch.zeros(size, *value.shape[1:], dtype=value.dtype, device=value.device)
    target[torch.as_tensor(list(index), device=target.device)] = value.to(target.device)
    return target


class _Assembly:
    """Collects the engine's results of several jobs into zennit-crp's rows.

    Parameters
    ----------
    row_samples
        The sample of each result row.
    row_conditions
        The (per-row, plain) condition of each result row; relevances at the layers it names get its mask.
    n_samples
        Number of samples in the data.
    concepts
        The concept of each conditioned layer.
    layers
        Names of the recorded layers, in the order of the result dicts.
    """

    def __init__(
        self,
        row_samples: Sequence[int],
        row_conditions: Sequence[Condition],
        n_samples: int,
        concepts: Mapping[str, Concept],
        layers: Sequence[str],
    ) -> None:
        self.row_samples = list(row_samples)
        self.row_conditions = list(row_conditions)
        self.n_samples = n_samples
        self.concepts = concepts
        self.layers = list(layers)
        self.heatmap: torch.Tensor | None = None
        self.prediction: torch.Tensor | None = None
        self.relevances: dict[str, torch.Tensor] = {}
        self.activations: dict[str, torch.Tensor] = {}

    def add(self, attribution: Attribution, samples: Sequence[int], rows: Sequence[int]) -> None:
        """Add one engine result for data rows ``samples`` whose result rows (sample-major) go to ``rows``."""
        n_rows = len(self.row_samples)
        assert attribution.heatmap is not None
        self.heatmap = _scatter(self.heatmap, attribution.heatmap, rows, n_rows)
        self.prediction = _scatter(self.prediction, attribution.prediction, samples, self.n_samples)
        for name, value in attribution.relevances.items():
            self.relevances[name] = _scatter(self.relevances.get(name), value, rows, n_rows)
        for name, value in attribution.activations.items():
            self.activations[name] = _scatter(self.activations.get(name), value, samples, self.n_samples)

    def finish(self) -> AttributionResults:
        assert self.heatmap is not None and self.prediction is not None
        index = torch.as_tensor(self.row_samples, device=self.prediction.device)
        relevances = {}
        for name in self.layers:
            relevance = self.relevances[name]
            groups: dict[tuple[int, ...], list[int]] = {}
            for row, condition in enumerate(self.row_conditions):
                if name in condition.layers:
                    groups.setdefault(_plain(condition.layers[name]), []).append(row)
            for ids, rows in groups.items():
                mask = self.concepts[name].mask(list(ids), relevance.shape[1:]).to(relevance)
                selected = torch.as_tensor(rows, device=relevance.device)
                relevance[selected] = relevance[selected] * mask
            relevances[name] = relevance
        activations = {
            name: self.activations[name].index_select(0, index.to(self.activations[name].device))
            for name in self.layers
        }
        return AttributionResults(
            heatmap=self.heatmap,
            activations=activations,
            relevances=relevances,
            prediction=self.prediction.index_select(0, index),
        )


class _Job(NamedTuple):
    """One engine call: data rows ``samples`` under ``conditions``; its sample-major results go to ``rows``."""

    samples: list[int]
    conditions: list[Condition]
    init_rel: InitRelevance
    rows: list[int]


def _scalar_init(init_rel: Any) -> Any:
    if isinstance(init_rel, np.generic):
        return init_rel.item()
    return init_rel


def _per_row(init_rel: Any, n_rows: int, n_samples: int) -> bool:
    """Whether ``init_rel`` is a tensor with one row per result row (zennit-crp's form), not one per sample."""
    return (
        isinstance(init_rel, torch.Tensor)
        and init_rel.dim() >= 2
        and init_rel.shape[0] == n_rows
        and n_rows != n_samples
    )


def _broadcast_jobs(n_samples: int, conditions: list[Condition], init_rel: Any) -> list[_Job]:
    """Every sample under every condition; one job, or one per distinct slice of a per-row ``init_rel``."""
    n_conditions = len(conditions)
    samples = list(range(n_samples))
    groups: list[tuple[Any, list[int]]] = []
    if _per_row(init_rel, n_samples * n_conditions, n_samples):
        per_condition = init_rel.reshape(n_samples, n_conditions, *init_rel.shape[1:])
        for m in range(n_conditions):
            for init, members in groups:
                if torch.equal(init, per_condition[:, m]):
                    members.append(m)
                    break
            else:
                groups.append((per_condition[:, m], [m]))
    else:
        groups.append((init_rel, list(range(n_conditions))))
    jobs = []
    for init, members in groups:
        rows = [n * n_conditions + m for n in samples for m in members]
        jobs.append(_Job(samples, [conditions[m] for m in members], init, rows))
    return jobs


def _paired_jobs(conditions: list[Condition], init_rel: Any) -> list[_Job]:
    """Sample ``i`` under condition ``i``; one job per set of conditioned layers (with or without targets)."""
    signatures: dict[tuple[frozenset[str], bool], list[int]] = {}
    for i, condition in enumerate(conditions):
        signatures.setdefault((frozenset(condition.layers), condition.targets is None), []).append(i)
    n = len(conditions)
    jobs = []
    for (layers, no_targets), members in signatures.items():
        condition = Condition(
            targets=None if no_targets else PerSample([_plain(conditions[i].targets) for i in members]),
            layers={name: PerSample([_plain(conditions[i].layers[name]) for i in members]) for name in sorted(layers)},
        )
        init = init_rel
        if isinstance(init_rel, torch.Tensor) and init_rel.dim() >= 2 and init_rel.shape[0] == n and len(members) < n:
            init = init_rel[members]
        jobs.append(_Job(members, [condition], init, members))
    return jobs


def _progress(total: int, enabled: bool) -> Any:
    """A tqdm progress bar when ``enabled`` and tqdm is installed, else ``None``."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, dynamic_ncols=True)


# -- the attributor --------------------------------------------------------------------------------------------------


class CondAttribution:
    """zennit-crp's conditional attribution, computed by :class:`glocal.Attributor`.

    Parameters
    ----------
    model
        The model to explain; it is left unchanged after every call.
    device
        Kept as ``self.device`` for code that reads it (default: the device of the model's parameters).
    overwrite_data_grad
        Accepted for compatibility; ``data.grad`` is never written, so there is nothing to overwrite.
    no_param_grad
        Accepted for compatibility; the model's ``requires_grad`` flags are never changed (no parameter gradient is
        computed anyway).

    Examples
    --------
    >>> from zennit.composites import EpsilonPlus
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.ReLU(), torch.nn.Linear(3, 2, bias=False))
    >>> attribution = CondAttribution(net)
    >>> data = torch.rand(2, 4)
    >>> result = attribution(data, [{"0": [0], "y": [1]}, {"0": [2], "y": [1]}], EpsilonPlus(), record_layer=["0"])
    >>> result.heatmap.shape, result.relevances["0"].shape
    (torch.Size([2]), torch.Size([2, 3]))
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device | str | None = None,
        overwrite_data_grad: bool = True,
        no_param_grad: bool = True,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        if device is None:
            parameter = next(model.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.overwrite_data_grad = overwrite_data_grad
        self.no_param_grad = no_param_grad
        self.MODEL_OUTPUT_NAME = OUTPUT

    # -- zennit-crp's override points: called only when a subclass replaces one of them -------------------------------

    def overridden_steps(self) -> list[str]:
        """The override points (``broadcast``, ``relevance_init``, ``backward``, ``heatmap_modifier``) that this
        object's class or the object itself replaces; when any is, calls run zennit-crp's steps (hooks on the model)."""
        return [
            name
            for name in hooked.OVERRIDE_POINTS
            if name in vars(self) or getattr(type(self), name) is not getattr(CondAttribution, name)
        ]

    def broadcast(self, data: torch.Tensor, conditions: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """zennit-crp's pairing of data and conditions: paired when the lengths agree, else each sample repeated
        ``len(conditions)`` times and the conditions tiled (``data.retain_grad()`` keeps the heatmap's gradient)."""
        len_data, len_cond = len(data), len(conditions)
        if len_data != len_cond:
            if len_cond > 1:
                data = torch.repeat_interleave(data, len_cond, dim=0)
            if len_data > 1:
                conditions = conditions * len_data
        data.retain_grad()
        return data, conditions

    def relevance_init(
        self, prediction: torch.Tensor, target_list: Sequence[Any] | None, init_rel: Any
    ) -> torch.Tensor:
        """zennit-crp's initial relevance: ``init_rel`` (callable on ``prediction``, tensor or number; default
        ``prediction`` itself), kept only at each row's targets when ``target_list`` has any.

        Unlike zennit-crp, a float ``init_rel`` is used as well as an int.
        """
        if callable(init_rel):
            selection = init_rel(prediction)
        elif isinstance(init_rel, torch.Tensor):
            selection = init_rel
        elif isinstance(init_rel, int | float | np.integer | np.floating) and not isinstance(init_rel, bool):
            selection = torch.full(prediction.shape, float(init_rel), dtype=prediction.dtype, device=prediction.device)
        else:
            selection = prediction
        if target_list:
            masked = torch.zeros_like(selection)
            for row, targets in enumerate(target_list):
                masked[row, targets] = selection[row, targets]
            selection = masked
        return selection

    def backward(
        self,
        pred: torch.Tensor,
        grad_mask: torch.Tensor,
        partial_backward: bool,
        layer_names: Sequence[str],
        layer_out: Mapping[str, torch.Tensor],
        generate: bool = False,
    ) -> None:
        """zennit-crp's backward pass from ``pred`` with initial relevance ``grad_mask``.

        With ``partial_backward`` (``exclude_parallel``) relevance goes from each conditioned layer of ``layer_names``
        (last in the forward pass first) only to the next, then on to the input; ``generate`` keeps the graph for the
        next batch.
        """
        if partial_backward and layer_names:
            tensor, grad = pred, grad_mask.to(pred)
            for name in layer_names:
                try:
                    (grad,) = torch.autograd.grad(tensor, inputs=layer_out[name], grad_outputs=grad, retain_graph=True)
                except RuntimeError as error:
                    if "allow_unused" not in str(error):
                        raise
                    raise ConditionError(
                        f"layer {name!r} does not lie below the conditioned layers above it: with "
                        "exclude_parallel=True the layers of one condition must be on one path (not parallel "
                        "branches). Pass exclude_parallel=False, or condition on layers of one path."
                    ) from error
                tensor = layer_out[name]
            torch.autograd.backward(tensor, grad, retain_graph=generate)
        else:
            torch.autograd.backward(pred, grad_mask.to(pred), retain_graph=generate)

    def heatmap_modifier(self, data: torch.Tensor, on_device: str | torch.device | None = None) -> torch.Tensor:
        """zennit-crp's heatmap: ``data.grad`` summed over dimension 1 (channels), moved to ``on_device``."""
        assert data.grad is not None, "heatmap_modifier needs data.grad, which the backward pass fills"
        heatmap = data.grad.detach()
        heatmap = heatmap.to(on_device) if on_device else heatmap
        return torch.sum(heatmap, dim=1)

    def __call__(
        self,
        data: torch.Tensor,
        conditions: Sequence[Mapping[str, Any]],
        composite: zennit.core.Composite | str | None = None,
        record_layer: Sequence[str] = (),
        mask_map: MaskMap | Mapping[str, MaskMap] = ChannelConcept.mask,
        start_layer: str | None = None,
        init_rel: InitRelevance = None,
        on_device: str | torch.device | None = None,
        exclude_parallel: bool = True,
    ) -> AttributionResults:
        """Conditional heatmaps, activations and relevances (zennit-crp's ``CondAttribution.__call__``).

        Parameters
        ----------
        data
            ``(N, ...)`` input batch; it may or may not require gradients.
        conditions
            M dicts ``{"layer": [concept ids], "y": [targets]}``. If ``N == M`` sample ``i`` is paired with condition
            ``i`` (N rows); otherwise every sample is attributed under every condition (``N * M`` rows, row
            ``n * M + m``).
        composite
            zennit composite with the LRP rules (and canonizers); ``"auto"`` picks glocal's composite for the
            architecture (:func:`glocal.lrp.composites.auto`); ``None`` gives plain gradients.
        record_layer
            Layers whose activations and relevances to return (conditioned layers and ``start_layer`` always are).
        mask_map
            Mask factory ``mask_map(batch_id, concept_ids, layer_name)`` for all layers, or a dict from layer name to
            one. Default: channels.
        start_layer
            Start the backward pass at this layer's output (targets are then ignored).
        init_rel
            Initial relevance: a callable on the output, a tensor, or a scalar. Default: the output itself.
        on_device
            Where to put the results.
        exclude_parallel
            Relevance reaches lower layers only through the conditioned layers (not around them, e.g. through skip
            connections).

        Returns
        -------
        AttributionResults
            ``heatmap, activations, relevances, prediction`` with one row per result row.
        """
        data = self._check_data(data)
        translator = _Translator(mask_map, self.MODEL_OUTPUT_NAME)
        mappings = self._check_conditions(conditions)
        overridden = self.overridden_steps()
        if not overridden and not translator.engine_can_mask(self.model, data[:1], mappings):
            overridden = ["mask_map"]
        if overridden:
            check_gradients_enabled()
            names = [record_layer] if isinstance(record_layer, str) else list(record_layer)
            raw = hooked.attribute(
                self, data, mappings, composite, names, mask_map, start_layer, _scalar_init(init_rel), on_device,
                exclude_parallel, overridden,
            )  # fmt: skip
            return AttributionResults(*raw)
        condition_list = [translator.condition(mapping) for mapping in mappings]
        n_samples, n_conditions = len(data), len(condition_list)
        init_rel = _scalar_init(init_rel)
        if n_samples == n_conditions:
            jobs = _paired_jobs(condition_list, init_rel)
            row_samples = list(range(n_samples))
            row_conditions = condition_list
        else:
            jobs = _broadcast_jobs(n_samples, condition_list, init_rel)
            row_samples = [n for n in range(n_samples) for _ in range(n_conditions)]
            row_conditions = condition_list * n_samples
        record = self._record(record_layer, condition_list, start_layer)
        attributor = Attributor(self.model, composite, concepts=translator.concepts, output_name=self.MODEL_OUTPUT_NAME)
        assembly = _Assembly(row_samples, row_conditions, n_samples, translator.concepts, record)
        for job in jobs:
            attribution = attributor(
                data[job.samples] if len(job.samples) < n_samples else data,
                job.conditions,
                record=record,
                start_layer=start_layer,
                init_rel=job.init_rel,
                sole_path=exclude_parallel,
                on_device=on_device,
            )
            assembly.add(attribution, job.samples, job.rows)
        return assembly.finish()

    def generate(
        self,
        data: torch.Tensor,
        conditions: Sequence[Mapping[str, Any]],
        composite: zennit.core.Composite | str | None = None,
        record_layer: Sequence[str] = (),
        mask_map: MaskMap | Mapping[str, MaskMap] = ChannelConcept.mask,
        start_layer: str | None = None,
        init_rel: InitRelevance = None,
        batch_size: int = 10,
        on_device: str | torch.device | None = None,
        exclude_parallel: bool = True,
        verbose: bool = True,
    ) -> Iterator[AttributionResults]:
        """Attribute every sample under many conditions, yielding batches of ``batch_size`` conditions.

        Each sample gets one forward pass; its conditions follow in batches, so memory holds one batch's results.
        Results come sample by sample (sample-major): concatenated, they equal ``__call__``'s all-pairs rows.

        Parameters
        ----------
        data
            ``(N, ...)`` input batch.
        conditions
            M condition dicts (see :meth:`__call__`); they may name different layers.
        batch_size
            Conditions per result.
        init_rel
            As in :meth:`__call__`. A tensor with ``batch_size`` rows is read as zennit-crp's: one row per condition
            of a batch; otherwise it has one row per sample or broadcasts to one sample's output.
        verbose
            Show a progress bar (when tqdm is installed).
        composite, record_layer, mask_map, start_layer, on_device, exclude_parallel
            As in :meth:`__call__`.

        Yields
        ------
        AttributionResults
            ``min(batch_size, conditions left)`` rows of one sample each.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of conditions, got {batch_size!r}")
        data = self._check_data(data)
        translator = _Translator(mask_map, self.MODEL_OUTPUT_NAME)
        mappings = self._check_conditions(conditions)
        overridden = self.overridden_steps()
        if not overridden and not translator.engine_can_mask(self.model, data[:1], mappings):
            overridden = ["mask_map"]
        if overridden:
            check_gradients_enabled()
            names = [record_layer] if isinstance(record_layer, str) else list(record_layer)
            bar = _progress(len(data) * math.ceil(len(mappings) / batch_size), verbose)
            try:
                for raw in hooked.generate(
                    self, data, mappings, composite, names, mask_map, start_layer, _scalar_init(init_rel), batch_size,
                    on_device, exclude_parallel, bar, overridden,
                ):  # fmt: skip
                    yield AttributionResults(*raw)
            finally:
                if bar is not None:
                    bar.close()
            return
        condition_list = [translator.condition(mapping) for mapping in mappings]
        record = self._record(record_layer, condition_list, start_layer)
        layers = [name for condition in condition_list for name in condition.layers]
        attributor = Attributor(self.model, composite, concepts=translator.concepts, output_name=self.MODEL_OUTPUT_NAME)
        init_rel = _scalar_init(init_rel)
        rows_init: torch.Tensor | None = None  # zennit-crp's per-condition rows of init_rel, if they differ
        sample_init: torch.Tensor | None = None  # one row per sample
        if isinstance(init_rel, torch.Tensor) and _per_row(init_rel, batch_size, 1):
            if bool((init_rel == init_rel[:1]).all()):
                init_rel = init_rel[:1]
            else:
                rows_init = init_rel
        elif isinstance(init_rel, torch.Tensor) and init_rel.dim() >= 2 and init_rel.shape[0] == len(data) > 1:
            sample_init = init_rel
        batches = [condition_list[begin : begin + batch_size] for begin in range(0, len(condition_list), batch_size)]
        bar = _progress(len(data) * len(batches), verbose)
        try:
            for sample in range(len(data)):
                if rows_init is not None:  # conditions of a batch start from different relevances: a call per batch
                    for batch in batches:
                        assembly = _Assembly([0] * len(batch), batch, 1, translator.concepts, record)
                        for job in _broadcast_jobs(1, batch, rows_init[: len(batch)]):
                            result = attributor(
                                data[sample : sample + 1],
                                job.conditions,
                                record=record,
                                start_layer=start_layer,
                                init_rel=job.init_rel,
                                sole_path=exclude_parallel,
                                on_device=on_device,
                            )
                            assembly.add(result, job.samples, job.rows)
                        yield assembly.finish()
                        if bar is not None:
                            bar.update(1)
                    continue
                with attributor.session(
                    data[sample : sample + 1],
                    record=record,
                    layers=layers,
                    start_layer=start_layer,
                    init_rel=init_rel if sample_init is None else sample_init[sample : sample + 1],
                    sole_path=exclude_parallel,
                    on_device=on_device,
                ) as run:
                    for batch in batches:
                        assembly = _Assembly([0] * len(batch), batch, 1, translator.concepts, record)
                        assembly.add(run.attribute(batch), [0], range(len(batch)))
                        yield assembly.finish()
                        if bar is not None:
                            bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    # -- argument checks ---------------------------------------------------------------------------------------------

    @staticmethod
    def _check_data(data: Any) -> torch.Tensor:
        if not isinstance(data, torch.Tensor):
            raise InputError(
                f"data must be a torch.Tensor batch shaped (N, ...), got {type(data).__name__}. "
                "Convert it with torch.as_tensor(...)."
            )
        if data.dim() < 2:
            raise InputError(
                f"data must be a batch shaped (N, ...) with N samples first, got shape {tuple(data.shape)}. "
                "Add the batch dimension with data.unsqueeze(0)."
            )
        return data.detach()

    def _check_conditions(self, conditions: Any) -> list[Mapping[str, Any]]:
        if isinstance(conditions, Mapping):
            conditions = [conditions]
        if isinstance(conditions, str) or not isinstance(conditions, Sequence):
            raise ConditionError(
                f"conditions must be a list of dicts like [{{'features.28': [50], '{self.MODEL_OUTPUT_NAME}': [1]}}], "
                f"got {type(conditions).__name__}"
            )
        if len(conditions) == 0:
            raise ConditionError(f"no conditions given; pass at least one, e.g. [{{'{self.MODEL_OUTPUT_NAME}': [0]}}]")
        return list(conditions)

    @staticmethod
    def _record(
        record_layer: Sequence[str] | str, conditions: Sequence[Condition], start_layer: str | None
    ) -> list[str]:
        """zennit-crp records the given layers, every conditioned layer and the start layer."""
        names = [record_layer] if isinstance(record_layer, str) else list(record_layer)
        names += [name for condition in conditions for name in condition.layers]
        if start_layer is not None:
            names.append(start_layer)
        return list(dict.fromkeys(names))
