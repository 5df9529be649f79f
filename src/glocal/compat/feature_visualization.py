"""zennit-crp's ``FeatureVisualization`` on glocal's concept index, and an importer for zennit-crp's output folders.

``FeatureVisualization(attribution, dataset, layer_map, ...)`` keeps zennit-crp's signatures (0.6): :meth:`run`
scans the dataset, :meth:`~FeatureVisualization.get_max_reference` and :meth:`~FeatureVisualization.get_stats_reference`
return ``{concept id: plot_fn(samples, heatmaps, rf)}`` (or ``{"concept:target": ...}``, from a ``cache`` when one is
given), :meth:`~FeatureVisualization.compute_stats` ranks the classes that use a concept and
:meth:`~FeatureVisualization.precompute_ref` fills the cache. The scan is :func:`glocal.index.build_index` (one glocal
index under ``path``); zennit-crp's settings select the index mode (:func:`glocal.compat.maximization.index_mode`):
``max_target`` ``"sum"``/``"max"`` with ``abs_norm`` give ``relmax_sum[_norm]``/``relmax_max[_norm]`` for RelMax and
``actmax_<sum|max>_norm`` (``abs_norm=True``, zennit-crp's default) or ``actmax_<sum|max>_raw`` for ActMax, which rank
zennit-crp's raw activation with its normalisation, so the samples are zennit-crp's. ``path`` may also be the output
folder of zennit-crp's own ``FeatureVisualization.run``: it is imported once (:func:`import_zennit_crp`, into
``<path>/index_zennit_crp``) and read from there.

Deliberate differences from zennit-crp (``docs/migration.md`` explains each)
-----------------------------------------------------------------------------
* **k instead of a fixed top-40.** ``FeatureVisualization(..., k=40)`` sets how many samples are kept per concept
  (and per class and concept).
* **Labels or predictions.** Relevance starts at each sample's label, as in zennit-crp; ``targets="prediction"``
  starts it at the predicted class (zennit-crp had only labels). Reference heatmaps of RelMax start at the same
  target (the sample's label, or the class of :meth:`~FeatureVisualization.get_stats_reference`).
* **RelMax reference heatmaps start from relevance.** zennit-crp started every reference heatmap at the layer's
  activation (``start_layer=layer``), also for samples chosen by *relevance* (its issue #11). Here RelMax heatmaps are
  the conditional heatmaps ``{layer: [concept], "y": [target]}`` (sole path); ActMax heatmaps start at the layer's
  activation as in zennit-crp.
* **Receptive fields in batches.** zennit-crp re-sliced the already sliced neuron ids for every batch after the first,
  so with more samples than ``batch_size`` it masked the wrong neurons (or failed). Here every batch takes its own
  slice; batched and one-by-one results are equal.
* **RelMax with ``max_target="max"`` and ``abs_norm=True``** divides each channel's largest relevance by the sample's
  summed absolute channel relevance (glocal's ``relmax_max_norm``); zennit-crp divided it by the sum of the channels'
  absolute maxima. The samples can differ, and a warning says so; every other setting ranks exactly as zennit-crp.
* **Class statistics are RelMax sums.** ``compute_stats`` and ``get_stats_reference`` read glocal's per-class top-k,
  which ranks by the summed relevance without normalisation whatever ``max_target``/``abs_norm`` (zennit-crp: the
  RelMax score, normalised by default); ``mode="activation"`` has no class statistics and raises ``ValueError``.
  ``compute_stats`` returns ``(numpy int array, torch tensor)`` like zennit-crp (whose own loader fails on
  NumPy >= 1.24, ``np.int``).
* **Ties** are broken by the smaller sample id (zennit-crp: unspecified ``argsort`` order).
* **No files but the index.** ``run`` returns ``{"index": directory}`` instead of lists of ``.npy`` files; a partial
  range ``data_start, data_end`` gets an index of its own, ``<path>/index_<start>_<end>`` (``<path>/index`` for the
  whole dataset), and the returned sample ids are dataset ids as in zennit-crp. ``RelMax.PATH`` and the other
  folders are not created; :func:`~glocal.compat.load_maximization` and :func:`~glocal.compat.load_statistics` read
  the index when given them. Progress goes to progress bars and ``logging``, never ``print``.
* **Concepts are channels.** ``layer_map`` values must be channel concepts (zennit-crp's, this package's or glocal's);
  the index ranks channels. ``multitarget_to_single`` is not called: multi-label datasets (multi-hot or lists of
  labels) are read directly by the scan.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zennit.core
from tqdm.auto import tqdm

from .. import __version__
from ..data import label_list, split_sample
from ..errors import ConceptError, InputError, warn
from ..index import MODES, ConceptIndex, LayerStatistics, build_index
from ..index.storage import IndexStore
from .attribution import ChannelConcept, CondAttribution
from .image import vis_img_heatmap, vis_opaque_img
from .maximization import Maximization, index_mode
from .statistics import Statistics

__all__ = ["FeatureVisualization", "import_zennit_crp"]

logger = logging.getLogger(__name__)

PlotFunction = Callable[[torch.Tensor, torch.Tensor, bool], Any]
"""``plot_fn(samples, heatmaps, rf)``: samples ``(n, C, H, W)`` before preprocessing, heatmaps ``(n, H, W)``."""


class _Preprocessed(torch.utils.data.Dataset):
    """``dataset`` with zennit-crp's ``preprocess_fn`` applied to each input (as a one-sample batch)."""

    def __init__(self, dataset: Any, preprocess_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.dataset = dataset
        self.preprocess_fn = preprocess_fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        x, y = split_sample(self.dataset[index])
        return self.preprocess_fn(torch.as_tensor(x)[None])[0].detach(), y


def _check_channel_concept(layer: str, concept: Any) -> None:
    if type(concept).__name__ != "ChannelConcept":
        raise ConceptError(
            f"layer_map[{layer!r}] is a {type(concept).__name__}; glocal's index ranks channels, so give a "
            "ChannelConcept (zennit-crp's, glocal.compat's or glocal's)"
        )


class FeatureVisualization:
    """zennit-crp's ``FeatureVisualization``: reference samples of concepts, from a glocal index under ``path``.

    Parameters
    ----------
    attribution
        The :class:`~glocal.compat.CondAttribution` of the model.
    dataset
        Map-style dataset of ``(input, label)`` items; inputs before ``preprocess_fn``.
    layer_map
        Layer name to its (channel) concept.
    preprocess_fn
        Applied to a batch ``(n, ...)`` of inputs before the model sees them.
    max_target, abs_norm
        RelMax ranking: ``"sum"`` or ``"max"`` over space, normalised by the sample's absolute channel sum or not.
    path
        Folder of the index.
    device
        Where reference data goes (default: the attribution's device).
    cache
        A zennit-crp ``Cache`` of rendered references (used when ``plot_fn`` is given).
    k
        Samples kept per concept (zennit-crp: always 40).
    targets
        ``"label"`` (zennit-crp's) or ``"prediction"``: where relevance starts during the scan.
    """

    def __init__(
        self,
        attribution: CondAttribution,
        dataset: Any,
        layer_map: dict[str, Any],
        preprocess_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_target: str = "sum",
        abs_norm: bool = True,
        path: str | Path = "FeatureVisualization",
        device: str | torch.device | None = None,
        cache: Any = None,
        *,
        k: int = 40,
        targets: str = "label",
    ) -> None:
        if max_target not in ("sum", "max"):
            raise ValueError(f"max_target must be 'sum' or 'max', got {max_target!r}")
        if targets not in ("label", "prediction"):
            raise ValueError(f"targets must be 'label' or 'prediction', got {targets!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive number of samples, got {k!r}")
        for layer, concept in layer_map.items():
            _check_channel_concept(layer, concept)
        if max_target == "max" and abs_norm:
            warn(
                "max_target='max' with abs_norm=True: glocal's RelMax divides each channel's largest relevance by the "
                "sample's summed absolute channel relevance, zennit-crp divided it by the sum of the channels' "
                "absolute maxima, so RelMax samples can differ from zennit-crp's (ActMax samples are the same); "
                "max_target='sum' (the default) or abs_norm=False rank exactly as zennit-crp"
            )
        overridden: list[str] = getattr(attribution, "overridden_steps", list)()
        if overridden:
            warn(
                f"the attribution's class overrides {', '.join(overridden)}; FeatureVisualization's scan (run) and "
                "its references run on glocal's concept index, which uses the attribution's model and composite but "
                "not these overrides, so its samples and heatmaps are those of the plain CondAttribution; call the "
                "subclass directly (attribution(data, conditions, ...)) for its own heatmaps"
            )
        self.attribution = attribution
        self.dataset = dataset
        self.layer_map = layer_map
        self.preprocess_fn = preprocess_fn
        self.max_target = max_target
        self.abs_norm = abs_norm
        self.path = Path(path)
        self.device = attribution.device if device is None else torch.device(device)
        self.Cache = cache
        self.k = k
        self.targets = targets
        self.RelMax = Maximization("relevance", max_target, abs_norm, self.path)
        self.ActMax = Maximization("activation", max_target, abs_norm, self.path)
        self.RelStats = Statistics("relevance", max_target, abs_norm, self.path)
        self.ActStats = Statistics("activation", max_target, abs_norm, self.path)
        self.relmax_mode = index_mode("relevance", max_target, abs_norm)
        self.actmax_mode = index_mode("activation", max_target, abs_norm)
        self._offset = 0
        self._directory = self.path / "index"
        self._index: ConceptIndex | None = None

    # -- data ----------------------------------------------------------------------------------------------------

    def preprocess_data(self, data: torch.Tensor) -> torch.Tensor:
        """``preprocess_fn(data)``, or ``data`` without one."""
        return self.preprocess_fn(data) if callable(self.preprocess_fn) else data

    def get_data_sample(self, index: int, preprocessing: bool = True) -> tuple[torch.Tensor, Any]:
        """Sample ``index`` as a one-sample batch on ``self.device`` (preprocessed or for plotting), and its label."""
        x, y = split_sample(self.dataset[int(index)])
        data = torch.as_tensor(x).to(self.device).unsqueeze(0)
        return (self.preprocess_data(data) if preprocessing else data), y

    def get_data_concurrently(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor, preprocessing: bool = False
    ) -> tuple[torch.Tensor, Any]:
        """zennit-crp's: samples ``indices`` as one batch and their labels (for one index its label, not a list)."""
        items = [self.get_data_sample(int(i), preprocessing) for i in indices]
        if len(items) == 1:
            return items[0]
        return torch.cat([x for x, _ in items]), [y for _, y in items]

    def _data(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[Any]]:
        items = [self.get_data_sample(int(i), preprocessing=False) for i in indices]
        return torch.cat([x for x, _ in items]), [y for _, y in items]

    def multitarget_to_single(self, multi_target: Any) -> list[int]:
        """zennit-crp's hook for multi-label datasets; not called here (the scan reads multi-label targets itself)."""
        raise NotImplementedError

    # -- scanning ------------------------------------------------------------------------------------------------

    def run(
        self,
        composite: zennit.core.Composite | None,
        data_start: int = 0,
        data_end: int | None = None,
        batch_size: int = 32,
        checkpoint: int = 500,
        on_device: str | torch.device | None = None,
    ) -> dict[str, str]:
        """Scan samples ``data_start:data_end`` and write the index; resumes an interrupted scan.

        ``checkpoint`` is the number of batches between checkpoints; ``on_device`` is accepted for compatibility.
        Returns ``{"index": directory}``.
        """
        if type(self).multitarget_to_single is not FeatureVisualization.multitarget_to_single:
            warn(
                f"{type(self).__name__}.multitarget_to_single is not called: glocal's scan reads multi-label targets "
                "(lists of classes or multi-hot vectors) directly and starts relevance at each of them; return such "
                "labels from the dataset instead"
            )
        end = len(self.dataset) if data_end is None else int(data_end)
        if not 0 <= data_start < end <= len(self.dataset):
            raise InputError(f"need 0 <= data_start < data_end <= {len(self.dataset)}, got {data_start}, {end}")
        dataset: Any = self.dataset
        if callable(self.preprocess_fn):
            dataset = _Preprocessed(dataset, self.preprocess_fn)
        whole = data_start == 0 and end == len(self.dataset)
        if not whole:
            dataset = torch.utils.data.Subset(dataset, range(data_start, end))
        directory = self.path / ("index" if whole else f"index_{data_start}_{end}")
        self._index = build_index(
            self.attribution.model,
            composite,
            dataset,
            list(self.layer_map),
            directory,
            k=self.k,
            class_k=self.k,
            targets=self.targets,
            batch_size=batch_size,
            checkpoint_every=checkpoint,
        )
        self._directory, self._offset = directory, data_start
        return {"index": str(directory)}

    @property
    def index(self) -> ConceptIndex:
        """The glocal index of the last :meth:`run` (or the one found at ``path/index``)."""
        if self._index is None:
            self._index = self._open_index()
        return self._index

    def _open_index(self) -> ConceptIndex:
        """``path/index``; else the results of zennit-crp's ``FeatureVisualization`` in ``path``, imported once."""
        if (self._directory / "manifest.json").exists():
            return ConceptIndex.open(self._directory)
        if any(_FOLDER.match(sub.name) for sub in self.path.iterdir() if sub.is_dir()) if self.path.is_dir() else False:
            imported = self.path / IMPORTED
            if (imported / "manifest.json").exists():
                index = ConceptIndex.open(imported)
                if index.complete:
                    return index
            logger.info("importing zennit-crp's results in %s into a glocal index at %s", self.path, imported)
            return import_zennit_crp(self.path, imported)
        raise InputError(
            f"{self.path} holds no results: neither a glocal.compat index ({self._directory}) nor zennit-crp's "
            "RelMax_*/ActMax_* folders; call run(composite, data_start, data_end) first, or give the path of an "
            "earlier run (zennit-crp's output folders are imported, see glocal.compat.import_zennit_crp)"
        )

    # -- references ----------------------------------------------------------------------------------------------

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


# -- importer --------------------------------------------------------------------------------------------------------

_FOLDER = re.compile(r"^(RelMax|ActMax|RelStats|ActStats)_(sum|max)_(normed|unnormed)$")
IMPORTED = "index_zennit_crp"
"""Folder (inside a zennit-crp result folder) of the glocal index that ``FeatureVisualization`` imports it into."""
_CHECKPOINT_FILE = re.compile(r"_[0-9]+_[0-9]+$")


def _max_mode(kind: str, target: str, norm: str) -> str:
    return index_mode("relevance" if kind == "RelMax" else "activation", target, norm == "normed")


def _pad(array: np.ndarray, k: int, fill: float | int, dtype: Any) -> np.ndarray:
    """zennit-crp's ``(n, concepts)`` to glocal's ``(concepts, k)``, padded with ``fill``."""
    out = np.full((array.shape[1], k), fill, dtype=dtype)
    out[:, : array.shape[0]] = array.T[:, :k]
    return out


def import_zennit_crp(
    folder: str | Path, directory: str | Path, *, manifest_extra: dict[str, Any] | None = None
) -> ConceptIndex:
    """Read the output folder of zennit-crp's ``FeatureVisualization.run`` into a glocal index at ``directory``.

    ``RelMax_<sum|max>_<normed|unnormed>`` become ``relmax_<sum|max>[_norm]``; ``ActMax_<sum|max>_*`` become
    ``actmax_<sum|max>`` (unnormed preferred; the folder used is in the manifest); modes zennit-crp did not compute
    stay empty (ids ``-1``). ``RelStats_*`` (unnormed ``sum`` preferred) becomes the class top-k; the class relevance
    sums and counts then cover only the kept samples. ``manifest_extra`` is added to the manifest.
    """
    source = Path(folder)
    found: dict[str, dict[str, Path]] = {"max": {}, "stats": {}}
    preference: dict[str, int] = {}
    for sub in sorted(p for p in source.iterdir() if p.is_dir()) if source.is_dir() else []:
        match = _FOLDER.match(sub.name)
        if match is None:
            continue
        kind, target, norm = match.groups()
        if kind in ("RelMax", "ActMax"):
            mode = _max_mode(kind, target, norm)
            rank = 0 if (kind == "RelMax" or norm == "unnormed") else 1
            if mode not in found["max"] or rank < preference[mode]:
                found["max"][mode], preference[mode] = sub, rank
        elif kind == "RelStats":
            rank = (target != "sum") * 2 + (norm != "unnormed")
            if "classes" not in found["stats"] or rank < preference["classes"]:
                found["stats"]["classes"], preference["classes"] = sub, rank
    if not found["max"]:
        raise InputError(f"{source} holds no zennit-crp RelMax_*/ActMax_* folders; give FeatureVisualization's path")
    layers: list[str] = []
    for sub in found["max"].values():
        for file in sorted(sub.glob("*_data.npy")):
            name = file.name[: -len("_data.npy")]
            if not _CHECKPOINT_FILE.search(name) and name not in layers:
                layers.append(name)
    loaded: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for mode, sub in found["max"].items():
        for layer in layers:
            if (sub / f"{layer}_data.npy").exists():
                loaded[mode, layer] = tuple(np.load(sub / f"{layer}_{part}.npy") for part in ("data", "rel", "rf"))
    stats_dir = found["stats"].get("classes")
    class_files: dict[str, dict[int, tuple[np.ndarray, ...]]] = {layer: {} for layer in layers}
    if stats_dir is not None:
        for layer in layers:
            for file in sorted((stats_dir / layer).glob("*_data.npy")) if (stats_dir / layer).is_dir() else []:
                name = file.name[: -len("_data.npy")]
                if _CHECKPOINT_FILE.search(name):
                    continue
                label = int(float(name))
                class_files[layer][label] = tuple(
                    np.load(stats_dir / layer / f"{name}_{part}.npy") for part in ("data", "rel", "rf")
                )
    sizes = [a[0].shape[0] for a in loaded.values()] + [a[0].shape[0] for c in class_files.values() for a in c.values()]
    k = max(sizes)
    arrays: dict[str, np.ndarray] = {}
    for layer in layers:
        concepts = next(a[0].shape[1] for (_, name), a in loaded.items() if name == layer)
        for mode in MODES:
            if (mode, layer) in loaded:
                ids, scores, positions = loaded[mode, layer]
                arrays[f"{layer}/{mode}/ids"] = _pad(ids.astype(np.int64), k, -1, np.int64)
                arrays[f"{layer}/{mode}/scores"] = _pad(scores.astype(np.float32), k, -np.inf, np.float32)
                arrays[f"{layer}/{mode}/positions"] = _pad(positions.astype(np.int64), k, -1, np.int64)
            else:
                arrays[f"{layer}/{mode}/ids"] = np.full((concepts, k), -1, dtype=np.int64)
                arrays[f"{layer}/{mode}/scores"] = np.full((concepts, k), -np.inf, dtype=np.float32)
                arrays[f"{layer}/{mode}/positions"] = np.full((concepts, k), -1, dtype=np.int64)
        per_class = class_files[layer]
        classes = max(per_class, default=-1) + 1
        class_ids = np.full((classes * concepts, k), -1, dtype=np.int64)
        class_scores = np.full((classes * concepts, k), -np.inf, dtype=np.float32)
        class_positions = np.full((classes * concepts, k), -1, dtype=np.int64)
        relevance_sum = np.zeros((classes, concepts), dtype=np.float64)
        count = np.zeros(classes, dtype=np.int64)
        for label, (ids, scores, positions) in per_class.items():
            rows = slice(label * concepts, (label + 1) * concepts)
            class_ids[rows] = _pad(ids.astype(np.int64), k, -1, np.int64)
            class_scores[rows] = _pad(scores.astype(np.float32), k, -np.inf, np.float32)
            class_positions[rows] = _pad(positions.astype(np.int64), k, -1, np.int64)
            relevance_sum[label] = scores.astype(np.float64).sum(0)
            count[label] = scores.shape[0]
        arrays[f"{layer}/classes/ids"] = class_ids
        arrays[f"{layer}/classes/scores"] = class_scores
        arrays[f"{layer}/classes/positions"] = class_positions
        arrays[f"{layer}/classes/relevance_sum"] = relevance_sum
        arrays[f"{layer}/classes/count"] = count
    manifest = {
        "glocal": __version__,
        "imported_from": "zennit-crp",
        "source": str(source.resolve()),
        "layers": layers,
        "k": k,
        "modes": {mode: sub.name for mode, sub in sorted(found["max"].items())},
        "classes": None if stats_dir is None else stats_dir.name,
        **(manifest_extra or {}),
    }
    compact: dict[str, np.ndarray] = {}
    for layer in layers:  # glocal's own layout, through the same conversion the scan uses
        prefix = f"{layer}/"
        layer_arrays = {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
        for key, value in LayerStatistics.from_arrays(layer_arrays).arrays().items():
            compact[prefix + key] = value
    store = IndexStore.create(directory, manifest)
    store.write_results(compact)
    store.mark_complete()
    return ConceptIndex.open(directory)
