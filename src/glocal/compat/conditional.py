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
too, with zennit-crp's signatures and behaviour (inherited from :class:`~glocal.compat.steps.CondAttributionSteps`).
When a subclass (or an instance) replaces any of them, ``__call__`` and ``generate`` run zennit-crp's steps with hooks
on the model (:mod:`glocal.compat.hooked`) and call the replacements where zennit-crp calls them; otherwise they run on
glocal's engine and the methods are not called.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import zennit.core

from ..attribution.conditions import OUTPUT, Condition
from ..attribution.engine import Attributor, InitRelevance
from ..attribution.inputs import check_gradients_enabled
from ..errors import ConditionError, InputError
from . import hooked
from .concepts import ChannelConcept, MaskFunction
from .results import Assembly, AttributionResults, attrResult, broadcast_jobs, paired_jobs, per_row, scalar_init
from .steps import CondAttributionSteps
from .translation import MaskMap, Translator

__all__ = ["AttributionResults", "CondAttribution", "MaskFunction", "MaskMap", "attrResult"]


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


class CondAttribution(CondAttributionSteps):
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

    # -- zennit-crp's override points (CondAttributionSteps): which ones a subclass replaces -------------------------

    def overridden_steps(self) -> list[str]:
        """The override points (``broadcast``, ``relevance_init``, ``backward``, ``heatmap_modifier``) that this
        object's class or the object itself replaces; when any is, calls run zennit-crp's steps (hooks on the model)."""
        return [
            name
            for name in hooked.OVERRIDE_POINTS
            if name in vars(self) or getattr(type(self), name) is not getattr(CondAttribution, name)
        ]

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
        translator = Translator(mask_map, self.MODEL_OUTPUT_NAME)
        mappings = self._check_conditions(conditions)
        overridden = self.overridden_steps()
        if not overridden and not translator.engine_can_mask(self.model, data[:1], mappings):
            overridden = ["mask_map"]
        if overridden:
            check_gradients_enabled()
            names = [record_layer] if isinstance(record_layer, str) else list(record_layer)
            raw = hooked.attribute(
                self, data, mappings, composite, names, mask_map, start_layer, scalar_init(init_rel), on_device,
                exclude_parallel, overridden,
            )  # fmt: skip
            return AttributionResults(*raw)
        condition_list = [translator.condition(mapping) for mapping in mappings]
        n_samples, n_conditions = len(data), len(condition_list)
        init_rel = scalar_init(init_rel)
        if n_samples == n_conditions:
            jobs = paired_jobs(condition_list, init_rel)
            row_samples = list(range(n_samples))
            row_conditions = condition_list
        else:
            jobs = broadcast_jobs(n_samples, condition_list, init_rel)
            row_samples = [n for n in range(n_samples) for _ in range(n_conditions)]
            row_conditions = condition_list * n_samples
        record = self._record(record_layer, condition_list, start_layer)
        attributor = Attributor(self.model, composite, concepts=translator.concepts, output_name=self.MODEL_OUTPUT_NAME)
        assembly = Assembly(row_samples, row_conditions, n_samples, translator.concepts, record)
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
        translator = Translator(mask_map, self.MODEL_OUTPUT_NAME)
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
                    self, data, mappings, composite, names, mask_map, start_layer, scalar_init(init_rel), batch_size,
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
        init_rel = scalar_init(init_rel)
        rows_init: torch.Tensor | None = None  # zennit-crp's per-condition rows of init_rel, if they differ
        sample_init: torch.Tensor | None = None  # one row per sample
        if isinstance(init_rel, torch.Tensor) and per_row(init_rel, batch_size, 1):
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
                        assembly = Assembly([0] * len(batch), batch, 1, translator.concepts, record)
                        for job in broadcast_jobs(1, batch, rows_init[: len(batch)]):
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
                        assembly = Assembly([0] * len(batch), batch, 1, translator.concepts, record)
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
