"""zennit-crp's ``FeatureVisualization`` on glocal's concept index: settings, data access and the scan.

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

The reference methods (``get_max_reference`` & co.) are inherited from
:class:`~glocal.compat.reference_images.ReferenceImages`; the importer lives in :mod:`glocal.compat.importer`.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zennit.core

from ..data import split_sample
from ..errors import ConceptError, InputError, warn
from ..index import ConceptIndex, build_index
from .attribution import CondAttribution
from .importer import IMPORTED, RESULT_FOLDER, import_zennit_crp
from .maximization import Maximization, index_mode
from .reference_images import ReferenceImages
from .statistics import Statistics

__all__ = ["FeatureVisualization", "import_zennit_crp"]

logger = logging.getLogger(__name__)


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


class FeatureVisualization(ReferenceImages):
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
        if (
            any(RESULT_FOLDER.match(sub.name) for sub in self.path.iterdir() if sub.is_dir())
            if self.path.is_dir()
            else False
        ):
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
