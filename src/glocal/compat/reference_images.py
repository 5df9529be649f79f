"""Reference samples and heatmaps of concepts for :class:`~glocal.compat.FeatureVisualization` (its base class).

:class:`ReferenceImages` holds zennit-crp's ``get_max_reference``, ``get_stats_reference``, ``compute_stats`` and
``precompute_ref``: the samples come from the glocal index of a ``FeatureVisualization`` run, the heatmaps from its
:class:`~glocal.compat.CondAttribution` (RelMax: the conditional heatmaps from each sample's target, ActMax: from the
layer's activation; with ``rf=True`` those of each sample's most relevant neuron), and rendered references are loaded
from and saved to the ``cache`` when one is given.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import zennit.core
from tqdm.auto import tqdm

from ..data import label_list
from ..errors import InputError
from ..index import ConceptIndex
from .attribution import ChannelConcept, CondAttribution
from .image import vis_img_heatmap, vis_opaque_img

__all__ = ["PlotFunction", "ReferenceImages"]

PlotFunction = Callable[[torch.Tensor, torch.Tensor, bool], Any]
"""``plot_fn(samples, heatmaps, rf)``: samples ``(n, C, H, W)`` before preprocessing, heatmaps ``(n, H, W)``."""


class ReferenceImages:
    """zennit-crp's reference methods of ``FeatureVisualization``, on the index and data of the subclass.

    The subclass provides the attributes below, :attr:`index`, :meth:`preprocess_data` and ``_data`` (the samples of
    dataset ids, before preprocessing, and their labels).
    """

    attribution: CondAttribution
    Cache: Any
    device: torch.device
    targets: str
    relmax_mode: str
    actmax_mode: str
    _offset: int

    if TYPE_CHECKING:

        @property
        def index(self) -> ConceptIndex: ...

        def preprocess_data(self, data: torch.Tensor) -> torch.Tensor: ...

        def _data(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[Any]]: ...

    def _max_samples(self, concept: int, layer: str, mode: str) -> tuple[np.ndarray, np.ndarray]:
        if mode == "relevance":
            top = self.index.top(layer, self.relmax_mode)
        elif mode == "activation":
            top = self.index.top(layer, self.actmax_mode)
        else:
            raise ValueError(f"mode must be 'relevance' or 'activation', got {mode!r}")
        ids, positions = top.ids[concept].numpy(), top.positions[concept].numpy()
        keep = ids >= 0
        return ids[keep] + self._offset, positions[keep]

    def _stats_samples(self, concept: int, layer: str, target: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
        if mode != "relevance":
            raise ValueError(
                f"glocal keeps class statistics of relevance only; use mode='relevance' (got {mode!r})"
                if mode == "activation"
                else f"mode must be 'relevance' or 'activation', got {mode!r}"
            )
        stats = self.index.statistics(layer)
        if not 0 <= int(target) < stats.classes:
            raise InputError(f"target {target} is not a class of the index (0..{stats.classes - 1})")
        ids, _, positions = stats.class_entries(int(target), int(concept))
        return ids.numpy() + self._offset, positions.numpy()

    def _cached(
        self,
        keys: list[Any],
        compute: Callable[[Any, tuple[int, int]], dict[Any, Any]],
        layer: str,
        mode: str,
        r_range: tuple[int, int],
        composite: Any,
        rf: bool,
        plot_fn: PlotFunction | None,
        function: str,
        overwrite: bool,
    ) -> dict[Any, Any]:
        """zennit-crp's ``cache_reference``: load what the cache has, compute and save the rest (all with
        ``overwrite``)."""
        if self.Cache is None or plot_fn is None:
            out: dict[Any, Any] = {}
            for key in keys:
                out.update(compute(key, r_range))
            return out
        if overwrite:
            found: dict[Any, Any] = {}
            missing: dict[Any, Any] = dict.fromkeys(keys, r_range)
        else:
            found, missing = self.Cache.load(keys, layer, mode, r_range, composite, rf, function, plot_fn.__name__)
        for key, missing_range in missing.items():
            computed = compute(key, tuple(missing_range))
            self.Cache.save(computed, layer, mode, missing_range, composite, rf, function, plot_fn.__name__)
            found = self.Cache.extend_dict(found, computed)
        return found

    def get_max_reference(
        self,
        concept_ids: int | Iterable[int],
        layer_name: str,
        mode: str = "relevance",
        r_range: tuple[int, int] = (0, 8),
        composite: zennit.core.Composite | None = None,
        rf: bool = False,
        plot_fn: PlotFunction | None = vis_img_heatmap,
        batch_size: int = 32,
        *,
        overwrite: bool = False,
    ) -> dict[int, Any]:
        """The RelMax (``mode="relevance"``) or ActMax reference samples ranked ``r_range`` of each concept.

        Returns ``{concept id: value}`` in the order given: without ``composite`` the samples ``(n, C, H, W)``;
        with it ``plot_fn(samples, heatmaps, rf)``, or ``(samples, heatmaps)`` when ``plot_fn`` is ``None``.
        With ``rf=True`` the heatmaps are those of each sample's most relevant (or active) neuron of the concept.
        With a ``cache`` and a ``plot_fn``, rendered references are loaded from it and new ones saved to it
        (``overwrite=True`` renders and saves all again).
        """
        concepts = [int(c) for c in concept_ids] if isinstance(concept_ids, Iterable) else [int(concept_ids)]
        if rf and not composite:
            warnings.warn("the receptive field is computed only with a composite", UserWarning, stacklevel=2)

        def compute(concept: int, window: tuple[int, int]) -> dict[Any, Any]:
            ids, positions = self._max_samples(concept, layer_name, mode)
            selected = slice(window[0], window[1])
            return {
                concept: self._reference(
                    ids[selected],
                    positions[selected],
                    None,
                    concept,
                    layer_name,
                    mode,
                    composite,
                    rf,
                    plot_fn,
                    batch_size,
                )
            }

        return self._cached(
            concepts, compute, layer_name, mode, r_range, composite, rf, plot_fn, "get_max_reference", overwrite
        )

    def get_stats_reference(
        self,
        concept_id: int,
        layer_name: str,
        targets: int | Iterable[int],
        mode: str = "relevance",
        r_range: tuple[int, int] = (0, 8),
        composite: zennit.core.Composite | None = None,
        rf: bool = False,
        plot_fn: PlotFunction | None = vis_img_heatmap,
        batch_size: int = 32,
        *,
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """The samples of each class in ``targets`` that use concept ``concept_id`` most (ranks ``r_range``).

        Returns ``{"concept:target": value}`` with values as in :meth:`get_max_reference`; heatmaps start at the
        class ``target``.
        """
        classes = [int(t) for t in targets] if isinstance(targets, Iterable) else [int(targets)]
        if rf and not composite:
            warnings.warn("the receptive field is computed only with a composite", UserWarning, stacklevel=2)

        def compute(key: str, window: tuple[int, int]) -> dict[Any, Any]:
            target = int(str(key).split(":")[-1])
            ids, positions = self._stats_samples(concept_id, layer_name, target, mode)
            selected = slice(window[0], window[1])
            return {
                key: self._reference(
                    ids[selected],
                    positions[selected],
                    target,
                    int(concept_id),
                    layer_name,
                    mode,
                    composite,
                    rf,
                    plot_fn,
                    batch_size,
                )
            }

        keys = [f"{int(concept_id)}:{t}" for t in classes]
        return self._cached(
            keys, compute, layer_name, mode, r_range, composite, rf, plot_fn, "get_stats_reference", overwrite
        )

    def _reference(
        self,
        ids: np.ndarray,
        positions: np.ndarray,
        target: int | None,
        concept: int,
        layer: str,
        mode: str,
        composite: zennit.core.Composite | None,
        rf: bool,
        plot_fn: PlotFunction | None,
        batch_size: int,
    ) -> Any:
        data, labels = self._data(ids.tolist())
        if not composite:
            return data.detach().cpu()
        if target is not None:
            start_targets = [target] * len(ids)
        elif self.targets == "label":
            start_targets = [label_list(label)[0] for label in labels]
        else:
            start_targets = []
        heatmaps = self._heatmaps(
            self.preprocess_data(data), concept, layer, mode, composite, rf, positions, start_targets, batch_size
        )
        if callable(plot_fn):
            return plot_fn(data.detach(), heatmaps.detach(), rf)
        return data.detach().cpu(), heatmaps.detach().cpu()

    def _heatmaps(
        self,
        data: torch.Tensor,
        concept: int,
        layer: str,
        mode: str,
        composite: zennit.core.Composite,
        rf: bool,
        positions: np.ndarray,
        targets: list[int],
        batch_size: int,
    ) -> torch.Tensor:
        """Conditional heatmaps ``(n, H, W)``; every batch slices the original positions and targets."""
        if mode == "relevance" and not targets:  # targets="prediction": the predicted class of each sample
            with torch.no_grad():
                output = self.attribution.model(data)
            targets = output.flatten(1).argmax(1).tolist()
        heatmaps = []
        for begin in range(0, len(data), batch_size):
            batch = data[begin : begin + batch_size].detach()
            end = begin + len(batch)
            if rf:
                values: list[Any] = [{concept: int(p)} for p in positions[begin:end]]
                mask_map: Any = ChannelConcept.mask_rf
            else:
                values, mask_map = [[concept]] * len(batch), ChannelConcept.mask
            if mode == "relevance":
                conditions = [
                    {layer: value, self.attribution.MODEL_OUTPUT_NAME: [t]}
                    for value, t in zip(values, targets[begin:end], strict=True)
                ]
                start_layer = None
            else:
                conditions = [{layer: value} for value in values]
                start_layer = layer
            result = self.attribution(
                batch, conditions, composite, mask_map=mask_map, start_layer=start_layer, on_device=self.device
            )
            heatmaps.append(result.heatmap)
        if not heatmaps:
            return torch.zeros(0, *data.shape[2:])
        return torch.cat(heatmaps)

    # -- statistics ----------------------------------------------------------------------------------------------

    def compute_stats(
        self,
        concept_id: int,
        layer_name: str,
        mode: str = "relevance",
        top_N: int = 5,
        mean_N: int = 10,
        norm: bool = False,
    ) -> tuple[np.ndarray, torch.Tensor]:
        """The ``top_N`` classes that use the concept most: each class's mean score over its ``mean_N`` best samples.

        Returns ``(classes, values)``, largest first; ``norm`` divides the values by the first.
        """
        if mode != "relevance":
            self._stats_samples(concept_id, layer_name, 0, mode)  # raises
        stats = self.index.statistics(layer_name)
        assert stats.class_count is not None
        classes = [c for c in range(stats.classes) if int(stats.class_count[c]) > 0]
        values = torch.zeros(len(classes))
        for i, label in enumerate(classes):
            kept = stats.class_entries(label, int(concept_id))[1][:mean_N]
            values[i] = float(kept.double().mean()) if len(kept) else -math.inf
        order = torch.argsort(values, descending=True)[:top_N]
        sorted_values = values[order]
        if norm:
            sorted_values = sorted_values / sorted_values[0]
        return np.asarray(classes, dtype=np.int64)[order.numpy()], sorted_values

    # -- caching -------------------------------------------------------------------------------------------------

    def precompute_ref(
        self,
        layer_c_ind: dict[str, Iterable[int]],
        composite: zennit.core.Composite,
        rf: bool = True,
        stats: bool = False,
        top_N: int = 4,
        mean_N: int = 10,
        mode: str = "relevance",
        r_range: tuple[int, int] = (0, 8),
        plot_list: Sequence[PlotFunction] = (vis_opaque_img,),
        batch_size: int = 32,
    ) -> None:
        """Render the references of every concept in ``layer_c_ind`` (``{layer: concept ids}``) into the cache.

        Each ``plot_fn`` of ``plot_list`` draws the :meth:`get_max_reference` samples and heatmaps, and with
        ``stats=True`` also those of :meth:`get_stats_reference` for the ``top_N`` classes of :meth:`compute_stats`;
        a later call with the same settings then loads them instead of computing them.
        """
        if self.Cache is None:
            raise InputError(
                "precompute_ref saves into a cache; pass cache=ImageCache(path) (glocal.compat.cache) to "
                "FeatureVisualization"
            )
        if composite is None:
            raise InputError("precompute_ref renders heatmaps; give a zennit composite")
        for layer, concepts in layer_c_ind.items():
            for concept in tqdm([int(c) for c in concepts], desc=f"references of {layer}", dynamic_ncols=True):
                samples, heatmaps = self.get_max_reference(
                    concept, layer, mode, r_range, composite, rf, None, batch_size
                )[concept]
                self._save_rendered(
                    samples, heatmaps, concept, plot_list, layer, mode, r_range, composite, rf, "get_max_reference"
                )
                if not stats:
                    continue
                targets, _ = self.compute_stats(concept, layer, mode, top_N, mean_N)
                for target in targets.tolist():
                    key = f"{concept}:{target}"
                    samples, heatmaps = self.get_stats_reference(
                        concept, layer, target, mode, r_range, composite, rf, None, batch_size
                    )[key]
                    self._save_rendered(
                        samples, heatmaps, key, plot_list, layer, mode, r_range, composite, rf, "get_stats_reference"
                    )

    def _save_rendered(
        self,
        samples: torch.Tensor,
        heatmaps: torch.Tensor,
        key: Any,
        plot_list: Sequence[PlotFunction],
        layer: str,
        mode: str,
        r_range: tuple[int, int],
        composite: zennit.core.Composite,
        rf: bool,
        function: str,
    ) -> None:
        for plot_fn in plot_list:
            rendered = {key: plot_fn(samples, heatmaps, rf)}
            self.Cache.save(rendered, layer, mode, r_range, composite, rf, function, plot_fn.__name__)
