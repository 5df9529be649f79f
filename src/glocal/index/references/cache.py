"""The cache of references: the settings that key a concept's rendered references, and its entries read and written.

The entries live in a :class:`~glocal.index.storage.ReferenceCache` (the storage layer, the one that touches disk).
A key covers everything that changes the pictures: these settings (format, ranking, sizes, fade, the ``to_image``
function's qualified name), the index's manifest, the model's and composite's fingerprints, the concept type, the
layer, the concept and its samples. A hit gives a :class:`Reference` without heatmaps, made without running the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ...attribution.engine import Attributor
from ..fingerprint import composite_fingerprint, model_fingerprint, stable_name
from ..storage import ReferenceCache
from .pictures import ImageFunction, crop_images
from .reference import Mode, Reference

if TYPE_CHECKING:
    from ..concept_index import ConceptIndex

__all__ = ["cache_settings", "cached_reference", "reference_key", "store_reference"]

_RENDER_THRESHOLD = 0.2  # render_references' default, which make_reference uses
_CACHE_FORMAT = "glocal.references/2"  # 2: dark fade by default


def cache_settings(
    index: ConceptIndex,
    attributor: Attributor,
    layer: str,
    *,
    mode: str,
    n: int,
    label: int | None,
    size: int,
    crop: bool,
    box_threshold: float,
    box_padding: int,
    opacity: float,
    to_image: ImageFunction,
) -> dict[str, Any]:
    """The settings of :func:`~glocal.index.references.concept_references` that key its cache entries (all but the
    concept and its samples, see :func:`reference_key`)."""
    settings: dict[str, Any] = {
        "format": _CACHE_FORMAT,
        "mode": mode,
        "n": n,
        "label": label,
        "size": size,
        "crop": crop,
        "box_threshold": box_threshold,
        "box_padding": box_padding,
        "opacity": opacity,
        "render_threshold": _RENDER_THRESHOLD,
        "to_image": stable_name(to_image),
    }
    model = attributor.model
    settings.update(
        index=index.manifest,
        model=model_fingerprint(model),
        composite=None if attributor.composite is None else composite_fingerprint(attributor.composite, model),
        concept_type=stable_name(type(attributor.concept(layer))),
        layer=layer,
    )
    return settings


def reference_key(
    cache: ReferenceCache, settings: dict[str, Any], channel: int, ids: Sequence[int], positions: Sequence[int]
) -> str:
    """The cache key of ``channel``'s references on the samples ``ids`` (cropped at ``positions``)."""
    return cache.key({**settings, "concept": channel, "sample_ids": ids, "positions": positions})


def cached_reference(
    cache: ReferenceCache,
    key: str,
    *,
    layer: str,
    channel: int,
    mode: Mode,
    ids: Sequence[int],
    scores: Sequence[float],
    images: torch.Tensor,
    size: int,
    crop: bool,
) -> Reference | None:
    """The references stored under ``key`` (without heatmaps), or ``None`` when the cache has no complete entry.

    ``images`` are the samples for display, which the cache does not keep uncropped: the unfaded crops
    (:attr:`Reference.tensors`) are made from them and the stored boxes.
    """
    hit = cache.entry(key)
    if hit is None or len(hit[0]) != len(ids):
        return None
    pictures, meta = hit
    boxes = [(int(t), int(le), int(b), int(r)) for t, le, b, r in meta["boxes"]]
    targets = meta.get("targets")
    return Reference(
        layer=layer,
        channel=channel,
        mode=mode,
        sample_ids=tuple(ids),
        scores=tuple(float(s) for s in scores),
        boxes=tuple(boxes),
        tensors=crop_images(images, boxes, size=size, crop=crop),
        images=tuple(picture.convert("RGB") for picture in pictures),
        targets=None if targets is None else tuple(int(t) for t in targets),
    )


def store_reference(cache: ReferenceCache, key: str, reference: Reference, *, mode: str, label: int | None) -> None:
    """Keep ``reference``'s pictures under ``key``, with its samples, scores, boxes and targets (``mode`` is the
    index's ranking)."""
    meta = {
        "layer": reference.layer,
        "concept": reference.channel,
        "mode": mode,
        "label": label,
        "sample_ids": list(reference.sample_ids),
        "scores": list(reference.scores),
        "boxes": [list(box) for box in reference.boxes],
        "targets": None if reference.targets is None else list(reference.targets),
    }
    cache.put(key, list(reference.images), meta)
