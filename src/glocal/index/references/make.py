"""Making references: heatmaps, receptive-field boxes and pictures of given samples of one or several concepts.

:func:`make_references` attributes the samples of many concepts together in batches (heatmaps and boxes from one
forward pass per batch) and renders them; :func:`make_reference` does it for one concept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...attribution.concepts import ChannelConcept
from ...attribution.engine import Attributor
from ...errors import InputError
from ...progress import progress_bar
from .heatmaps import check_per_sample, heatmaps_and_boxes, receptive_field_boxes, reference_heatmaps
from .pictures import crop_images, render_references
from .reference import Mode, Reference, check_mode

__all__ = ["ReferenceSamples", "make_reference", "make_references"]


@dataclass(frozen=True)
class ReferenceSamples:
    """The reference samples of one concept, as :func:`make_references` takes them.

    ``images`` are the samples for display (``(n, C, H, W)`` in [0, 1]), ``samples`` the same samples as the model
    takes them; ``sample_ids``, ``scores``, ``positions`` and ``targets`` give one value per sample (see
    :func:`make_reference`).
    """

    channel: int
    images: torch.Tensor
    samples: torch.Tensor
    sample_ids: Sequence[int]
    scores: Sequence[float]
    positions: Sequence[int]
    targets: Sequence[int] | None = None


def make_references(
    attributor: Attributor,
    layer: str,
    concepts: Sequence[ReferenceSamples],
    *,
    mode: Mode = "relevance",
    size: int = 112,
    opacity: float = 0.2,
    crop: bool = True,
    box_threshold: float = 0.01,
    box_padding: int = 2,
    batch_size: int = 32,
    progress: bool = True,
) -> list[Reference]:
    """:func:`make_reference` for several concepts of ``layer`` at once: their samples share batches.

    With channel concepts and ``crop=True``, the samples of all concepts are attributed together in batches of
    ``batch_size`` (one forward pass per batch, heatmaps and boxes from it), which for many concepts with few samples
    each is much faster than one call per concept (large layers, such as a classifier's, run once per batch instead
    of once per concept). The result equals one :func:`make_reference` call per concept. ``progress`` shows a
    progress bar when there is more than one batch.
    """
    check_mode(mode)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of samples, got {batch_size}")
    for item in concepts:
        n = item.samples.shape[0]
        if item.images.shape[0] != n or len(item.sample_ids) != n or len(item.scores) != n:
            raise InputError(
                f"images, sample_ids and scores must give one entry per sample ({n}) of concept {item.channel}; got "
                f"{item.images.shape[0]}, {len(item.sample_ids)} and {len(item.scores)}"
            )
    if crop and isinstance(attributor.concept(layer), ChannelConcept) and concepts:
        shapes = {tuple(item.samples.shape[1:]) for item in concepts}
        if len(shapes) > 1:
            raise InputError(f"the samples of all concepts must have one shape to share batches, got {sorted(shapes)}")
        samples = torch.cat([item.samples for item in concepts])
        channels = [int(item.channel) for item in concepts for _ in range(item.samples.shape[0])]
        positions = [int(p) for item in concepts for p in item.positions]
        targets: list[int] | None = None
        if mode == "relevance":
            targets = []
            for item in concepts:
                checked = check_per_sample(item.targets, item.samples.shape[0], "targets", needed=True)
                assert checked is not None
                targets.extend(checked)
        if len(positions) != samples.shape[0]:
            raise InputError(
                f"positions must give one value per sample: got {len(positions)} for {samples.shape[0]} samples"
            )
        parts = []
        starts = range(0, samples.shape[0], batch_size)
        bar = progress_bar(
            len(starts), f"glocal references of {layer}", enabled=progress and len(starts) > 1, unit="batch"
        )
        for start in starts:
            if bar is not None:
                bar.update(1)
            chunk = slice(start, start + batch_size)
            parts.append(
                heatmaps_and_boxes(
                    attributor,
                    samples[chunk],
                    layer,
                    channels[chunk],
                    positions[chunk],
                    None if targets is None else targets[chunk],
                    mode,
                    box_threshold,
                    box_padding,
                )
            )
        if bar is not None:
            bar.close()
        all_heatmaps = torch.cat([heatmaps for heatmaps, _ in parts]) if parts else torch.zeros(0)
        all_boxes = [box for _, boxes in parts for box in boxes]
        computed = []
        start = 0
        for item in concepts:
            stop = start + item.samples.shape[0]
            computed.append((all_heatmaps[start:stop], all_boxes[start:stop]))
            start = stop
    else:
        computed = []
        for item in concepts:
            heatmaps = reference_heatmaps(attributor, item.samples, layer, item.channel, item.targets, mode)
            n = item.samples.shape[0]
            boxes = (
                receptive_field_boxes(
                    attributor,
                    item.samples,
                    layer,
                    item.channel,
                    item.positions,
                    item.targets,
                    mode,
                    threshold=box_threshold,
                    padding=box_padding,
                )
                if crop
                else [(0, 0, int(item.images.shape[2]), int(item.images.shape[3]))] * n
            )
            computed.append((heatmaps, boxes))
    references = []
    for item, (heatmaps, boxes) in zip(concepts, computed, strict=True):
        pictures = render_references(item.images, heatmaps, boxes, size=size, opacity=opacity, crop=crop)
        references.append(
            Reference(
                layer=layer,
                channel=int(item.channel),
                mode=mode,
                sample_ids=tuple(int(i) for i in item.sample_ids),
                scores=tuple(float(s) for s in item.scores),
                boxes=tuple(boxes),
                tensors=crop_images(item.images, boxes, size=size, crop=crop),
                images=tuple(pictures),
                heatmaps=heatmaps,
                targets=None if item.targets is None or mode != "relevance" else tuple(int(t) for t in item.targets),
            )
        )
    return references


def make_reference(
    attributor: Attributor,
    images: torch.Tensor,
    samples: torch.Tensor,
    layer: str,
    channel: int,
    *,
    sample_ids: Sequence[int],
    scores: Sequence[float],
    positions: Sequence[int],
    targets: Sequence[int] | None = None,
    mode: Mode = "relevance",
    size: int = 112,
    opacity: float = 0.2,
    crop: bool = True,
    box_threshold: float = 0.01,
    box_padding: int = 2,
) -> Reference:
    """Heatmaps, receptive-field boxes and pictures of one concept's reference samples (two engine calls).

    ``images`` are the samples for display (``(n, C, H, W)`` in [0, 1]), ``samples`` the same samples as the model
    takes them; the other arguments are those of :func:`reference_heatmaps`, :func:`receptive_field_boxes` and
    :func:`render_references`.
    """
    item = ReferenceSamples(int(channel), images, samples, sample_ids, scores, positions, targets)
    (reference,) = make_references(
        attributor,
        layer,
        [item],
        mode=mode,
        size=size,
        opacity=opacity,
        crop=crop,
        box_threshold=box_threshold,
        box_padding=box_padding,
        batch_size=max(int(samples.shape[0]), 1),
    )
    return reference
