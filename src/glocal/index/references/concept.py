"""The public entry point: :func:`concept_references`, a concept's references from a concept index.

It chooses the samples (:mod:`.selection`), loads them from the dataset (:mod:`glocal.data`), looks them up in a cache
(:mod:`.cache`), and makes the missing ones for all asked concepts together (:func:`~.make.make_references`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

from ...attribution.engine import Attributor
from ...data import load_samples, model_device
from ...errors import warn
from ..statistics import MODES as INDEX_MODES
from ..storage import ReferenceCache
from .cache import cache_settings, cached_reference, reference_key, store_reference
from .make import ReferenceSamples, make_references
from .pictures import ImageFunction, display_images, min_max_image
from .reference import Mode, Reference
from .selection import check_same_rules, class_samples, empty_reference, index_targets

if TYPE_CHECKING:
    from ..concept_index import ConceptIndex

__all__ = ["concept_references"]


@overload
def concept_references(
    index: ConceptIndex,
    dataset: Any,
    attributor: Attributor,
    layer: str,
    concept: int,
    *,
    mode: str = ...,
    n: int = ...,
    label: int | None = ...,
    size: int = ...,
    crop: bool = ...,
    cache: ReferenceCache | None = ...,
    to_image: ImageFunction | None = ...,
    opacity: float = ...,
    box_threshold: float = ...,
    box_padding: int = ...,
    batch_size: int = ...,
    progress: bool = ...,
) -> Reference: ...


@overload
def concept_references(
    index: ConceptIndex,
    dataset: Any,
    attributor: Attributor,
    layer: str,
    concept: Sequence[int],
    *,
    mode: str = ...,
    n: int = ...,
    label: int | None = ...,
    size: int = ...,
    crop: bool = ...,
    cache: ReferenceCache | None = ...,
    to_image: ImageFunction | None = ...,
    opacity: float = ...,
    box_threshold: float = ...,
    box_padding: int = ...,
    batch_size: int = ...,
    progress: bool = ...,
) -> dict[int, Reference]: ...


def concept_references(
    index: ConceptIndex,
    dataset: Any,
    attributor: Attributor,
    layer: str,
    concept: int | Sequence[int],
    *,
    mode: str = "relmax_sum",
    n: int = 8,
    label: int | None = None,
    size: int = 112,
    crop: bool = True,
    cache: ReferenceCache | None = None,
    to_image: ImageFunction | None = None,
    opacity: float = 0.2,
    box_threshold: float = 0.01,
    box_padding: int = 2,
    batch_size: int = 32,
    progress: bool = True,
) -> Reference | dict[int, Reference]:
    """The references of ``concept`` of ``layer``: its top samples in ``index``, attributed, cropped and rendered.

    RelMax modes (``relmax_*``) start each sample's relevance from its target, as the index did (its label, or the
    model's prediction when the index was built with ``targets="prediction"``; with ``label`` given, that class);
    ActMax modes (``actmax_*``) from the concept's activation. Each crop is the receptive field of the concept's most
    relevant (or most active) unit on that sample, at the position the index stored.

    Parameters
    ----------
    index
        The concept index (built from ``attributor``'s model and composite, and ``dataset``).
    dataset
        The indexed dataset: ``input`` or ``(input, label)`` items (or a DataLoader over it).
    attributor
        The engine that computes the heatmaps and boxes.
    layer, concept
        The concept: a channel of ``layer``; or a sequence of channels, whose samples then share batches
        (see :func:`make_references`).
    mode
        The index's ranking, one of ``glocal.index.MODES``.
    n
        How many samples, best first. Fewer when the index kept fewer, or when fewer have a positive score (a
        :class:`~glocal.GlocalWarning` says which concepts); a concept without any gets a :class:`Reference` without
        samples (its :meth:`~Reference.grid` shows one empty cell).
    label
        Only samples of this class (the index's class statistics, ranked by ``relmax_sum``, the only mode they keep).
    size, crop, opacity, box_threshold, box_padding
        As in :func:`make_reference`.
    cache
        Where rendered references are kept: a hit is loaded from disk without running the model.
    to_image
        Maps model inputs ``(n, C, H, W)`` to images for display ``(n, 1 or 3, H, W)`` in [0, 1] (e.g. undoing the
        normalisation); default :func:`min_max_image`. Its qualified name is part of the cache key, so give distinct
        functions distinct names.

    batch_size
        Samples attributed together when several concepts are asked for.
    progress
        Show a progress bar when the samples take more than one batch.

    Returns
    -------
    Reference, or dict of channel to Reference
        ``mode`` is ``"relevance"`` (RelMax) or ``"activation"`` (ActMax); from a cache hit, ``heatmaps`` is ``None``.
    """
    if mode not in INDEX_MODES:
        raise ValueError(f"mode must be one of {INDEX_MODES}, got {mode!r}")
    if n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    if label is not None and mode != "relmax_sum":
        raise ValueError(
            f"the index keeps class statistics for mode 'relmax_sum' only; got mode={mode!r} with label={label}"
        )
    single = not isinstance(concept, Sequence)
    concepts = [int(c) for c in concept] if isinstance(concept, Sequence) else [int(concept)]
    reference_mode: Mode = "activation" if mode.startswith("actmax") else "relevance"
    to_image = to_image or min_max_image
    check_same_rules(index, attributor)
    settings = None
    if cache is not None:
        settings = cache_settings(
            index,
            attributor,
            layer,
            mode=mode,
            n=n,
            label=label,
            size=size,
            crop=crop,
            box_threshold=box_threshold,
            box_padding=box_padding,
            opacity=opacity,
            to_image=to_image,
        )
    found: dict[int, Reference] = {}
    missing: list[tuple[int, ReferenceSamples, str | None]] = []
    short: list[str] = []
    for channel in dict.fromkeys(concepts):
        if label is None:
            ids, scores, positions = index.samples(layer, channel, mode, n)
            kept = int((index.top(layer, mode).ids[channel][:n] >= 0).sum())
        else:
            ids, scores, positions = class_samples(index, layer, channel, int(label), n)
            kept = min(n, len(index.statistics(layer).class_entries(int(label), channel)[0]))
        if len(ids) < kept:  # fewer than the index kept: the others have no positive score
            short.append(f"{channel} ({len(ids)})")
        if not ids:
            found[channel] = empty_reference(layer, channel, reference_mode, size)
            continue
        inputs, labels = load_samples(dataset, ids)
        images = display_images(inputs, to_image)
        key = None
        if cache is not None and settings is not None:
            key = reference_key(cache, settings, channel, ids, positions)
            hit = cached_reference(
                cache,
                key,
                layer=layer,
                channel=channel,
                mode=reference_mode,
                ids=ids,
                scores=scores,
                images=images,
                size=size,
                crop=crop,
            )
            if hit is not None:
                found[channel] = hit
                continue
        samples = inputs.to(model_device(attributor.model))
        targets = index_targets(index, attributor, samples, labels, label) if reference_mode == "relevance" else None
        missing.append((channel, ReferenceSamples(channel, images, samples, ids, scores, positions, targets), key))

    if short:
        what = "activation" if reference_mode == "activation" else "relevance"
        where = "" if label is None else f" among the samples of class {label}"
        shown = ", ".join(short[:8]) + (f" and {len(short) - 8} more" if len(short) > 8 else "")
        verb = "concepts of layer {!r} have" if len(short) > 1 else "concept of layer {!r} has"
        warn(
            f"{len(short)} {verb.format(layer)} fewer than {n} samples with a positive {what} score{where} "
            f"({mode}): channel (references) {shown}. "
            f"Samples where a concept has no positive {what} are no references of it, so these concepts get fewer "
            "references (an empty Reference when none)."
        )
    made = make_references(
        attributor,
        layer,
        [item for _, item, _ in missing],
        mode=reference_mode,
        size=size,
        opacity=opacity,
        crop=crop,
        box_threshold=box_threshold,
        box_padding=box_padding,
        batch_size=batch_size,
        progress=progress,
    )
    for (channel, _, key), reference in zip(missing, made, strict=True):
        if reference.heatmaps is not None:
            reference = dataclasses.replace(reference, heatmaps=reference.heatmaps.detach().cpu())
        if cache is not None and key is not None:
            store_reference(cache, key, reference, mode=mode, label=label)
        found[channel] = reference
    if single:
        return found[concepts[0]]
    return {channel: found[channel] for channel in concepts}
