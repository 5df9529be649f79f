"""Reference images of a concept: the dataset samples that use it most, cropped to where it acts.

Given the samples a dataset index found for a concept (a channel of ``layer``), this module computes

* :func:`reference_heatmaps` -- the concept's conditional heatmap ``R(x | theta)`` on each sample;
* :func:`receptive_field_boxes` -- each sample's crop: the input region that the concept's single most relevant
  unit (channel and position) draws its relevance from;
* :func:`render_references` -- the cropped samples as pictures, with the irrelevant part faded towards a flat
  background (zennit-crp's ``vis_opaque_img``), and :func:`reference_grid` to tile them;
* :func:`make_reference` -- all of it at once, as a frozen :class:`Reference`;
* :func:`concept_references` -- the same for a concept's top samples in a :class:`~glocal.index.ConceptIndex`,
  loaded from the dataset and optionally cached on disk (:class:`~glocal.index.storage.ReferenceCache`).

Two ways of starting the relevance (``mode``):

``"relevance"`` (RelMax)
    Relevance starts at each sample's target output unit and flows down through the concept only
    (``{layer: [channel], "y": [target]}``, sole path): *how the model used the concept for its decision*.
    zennit-crp instead starts at the layer's activation for both modes (its issue #11).
``"activation"`` (ActMax)
    Relevance starts at the layer itself (``start_layer=layer``) from the *positive part* of the concept's
    activation, ``max(a, 0)`` on each of the channel's units: *what in the input makes the concept fire*. On a layer
    whose output is already rectified this is the activation itself; on a convolution followed by a ReLU (the index
    records the convolution's output) it is what the ReLU passes on, so that the negative responses, which the
    model discards, do not swamp the heatmap (zennit-crp starts from the raw activation, whose sum there is often
    negative: every pixel then counts as irrelevant and the reference is faded out). The crop is the receptive
    field of the most active unit, ``argmax_p a(p)``, started from its (positive) activation alone.

Only samples with a positive score are references (:meth:`~glocal.index.ConceptIndex.samples`): a concept that
nothing in the dataset uses (or excites) gets fewer references, or none, with a :class:`~glocal.GlocalWarning`.

Boxes are ``(top, left, bottom, right)`` in input pixels with exclusive ``bottom`` and ``right``, so
``image[..., top:bottom, left:right]`` is the crop.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..attribution.concepts import ChannelConcept, NeuronConcept
from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor
from ..attribution.targets import predicted
from ..data import label_list, load_samples, model_device
from ..errors import InputError, warn
from ..progress import progress_bar
from .fingerprint import composite_fingerprint, model_fingerprint
from .statistics import MODES as INDEX_MODES
from .storage import ReferenceCache

if TYPE_CHECKING:
    from .build import ConceptIndex

__all__ = [
    "Box",
    "Mode",
    "Reference",
    "ReferenceSamples",
    "concept_references",
    "crop_images",
    "make_reference",
    "make_references",
    "min_max_image",
    "positive_part",
    "receptive_field_boxes",
    "reference_grid",
    "reference_heatmaps",
    "render_references",
]

Mode = Literal["relevance", "activation"]
Box = tuple[int, int, int, int]
"""``(top, left, bottom, right)`` in input pixels; ``bottom`` and ``right`` are exclusive."""

MODES = ("relevance", "activation")


@dataclass(frozen=True)
class Reference:
    """Reference samples of one concept.

    Attributes
    ----------
    layer, channel, mode
        The concept and how its relevance was started (``"relevance"`` or ``"activation"``).
    sample_ids
        Dataset indices of the samples, most relevant (or active) first.
    scores
        The index's score of the concept on each sample (relevance or activation).
    boxes
        Each sample's crop ``(top, left, bottom, right)``.
    tensors
        ``(n, C, size, size)``: the cropped images, resized keeping their aspect ratio and padded, *without* fading.
    images
        The rendered references (cropped, resized, irrelevant part faded), one RGB image per sample.
    heatmaps
        ``(n, H, W)`` the concept's heatmaps on the (uncropped) samples; ``None`` when loaded from a cache.
    targets
        The output unit that started each sample's relevance (RelMax); ``None`` for ActMax.
    """

    layer: str
    channel: int
    mode: str
    sample_ids: tuple[int, ...]
    scores: tuple[float, ...]
    boxes: tuple[Box, ...]
    tensors: torch.Tensor
    images: tuple[Image.Image, ...]
    heatmaps: torch.Tensor | None = None
    targets: tuple[int, ...] | None = None

    def grid(self, columns: int = 4, title: str | None = None) -> Image.Image:
        """The rendered references tiled into one image (see :func:`reference_grid`)."""
        if title is None:
            title = f"{self.layer} channel {self.channel} ({self.mode})"
        return reference_grid(list(self.images), columns=columns, title=title)


# -- attribution ------------------------------------------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be 'relevance' (RelMax) or 'activation' (ActMax), got {mode!r}")


def _check_per_sample(values: Sequence[int] | None, n: int, what: str, needed: bool) -> list[int] | None:
    if values is None:
        if needed:
            raise InputError(f"{what} are needed, one per sample ({n} samples), but none were given")
        return None
    values = [int(v) for v in values]
    if len(values) != n:
        raise InputError(f"{what} must give one value per sample: got {len(values)} for {n} samples")
    return values


def positive_part(activation: torch.Tensor) -> torch.Tensor:
    """``max(a, 0)``: where ActMax references start their relevance (the engine's ``init_rel``)."""
    return activation.clamp(min=0)


def _start(layer: str, mode: str) -> dict[str, Any]:
    """The engine options that start a reference's relevance: at ``layer`` from its positive part (ActMax)."""
    return {"start_layer": layer, "init_rel": positive_part} if mode == "activation" else {}


def _condition(
    layer: str, ids: tuple[int, ...] | PerSample, targets: list[int] | None, mode: str
) -> tuple[Condition, str | None]:
    """The condition and ``start_layer`` of one reference attribution."""
    if mode == "relevance":
        assert targets is not None
        return Condition(targets=PerSample([[t] for t in targets]), layers={layer: ids}), None
    return Condition(layers={layer: ids}), layer


def reference_heatmaps(
    attributor: Attributor,
    samples: torch.Tensor,
    layer: str,
    channel: int,
    targets: Sequence[int] | None = None,
    mode: Mode = "relevance",
) -> torch.Tensor:
    """The conditional heatmap of concept ``channel`` of ``layer`` on each sample, in one engine call.

    Parameters
    ----------
    attributor
        The engine (model and composite). ``channel`` is an id of its concept for ``layer`` (a channel by default).
    samples
        ``(n, ...)`` model inputs (preprocessed).
    layer, channel
        The concept.
    targets
        With ``mode="relevance"``: each sample's output unit that starts the relevance (``n`` ints).
        Ignored with ``mode="activation"``.
    mode
        ``"relevance"``: from the target output through the concept only (sole path). ``"activation"``: from the
        positive part ``max(a, 0)`` of the concept's activation at ``layer``.

    Returns
    -------
    torch.Tensor
        ``(n, *spatial)``: the input relevance summed over input channels.
    """
    _check_mode(mode)
    targets = _check_per_sample(targets, samples.shape[0], "targets", needed=mode == "relevance")
    condition, _ = _condition(layer, (int(channel),), targets, mode)
    result = attributor(samples, condition, sole_path=True, **_start(layer, mode))
    assert result.heatmap is not None
    return result.heatmap


def _box(heatmap: torch.Tensor, threshold: float, padding: int) -> Box:
    """Bounding box of the pixels whose |relevance| exceeds ``threshold`` times the largest; never empty."""
    height, width = heatmap.shape
    magnitude = heatmap.detach().abs()
    peak = float(magnitude.max()) if magnitude.numel() else 0.0
    if not math.isfinite(peak) or peak <= 0:
        return 0, 0, height, width  # no relevance at all: keep the whole sample
    rows, columns = torch.nonzero(magnitude > threshold * peak, as_tuple=True)
    if rows.numel() == 0:  # threshold >= 1: keep at least the peak
        rows, columns = torch.nonzero(magnitude >= peak, as_tuple=True)
    top, bottom = int(rows.min()) - padding, int(rows.max()) + 1 + padding
    left, right = int(columns.min()) - padding, int(columns.max()) + 1 + padding
    return max(top, 0), max(left, 0), min(bottom, height), min(right, width)


def receptive_field_boxes(
    attributor: Attributor,
    samples: torch.Tensor,
    layer: str,
    channel: int,
    positions: Sequence[int],
    targets: Sequence[int] | None = None,
    mode: Mode = "relevance",
    *,
    threshold: float = 0.01,
    padding: int = 2,
) -> list[Box]:
    """Each sample's crop to the receptive field of the concept's most relevant unit, in one engine call.

    The heatmap of the single unit ``(channel, position)`` of ``layer`` (a :class:`~glocal.NeuronConcept`) is
    nonzero only inside that unit's receptive field, and there mostly where the unit looked. The box is the
    bounding box of the pixels whose ``|relevance|`` exceeds ``threshold`` times the heatmap's largest
    ``|relevance|``, widened by ``padding`` pixels and clipped to the image. The heatmap is not blurred (zennit-crp
    blurs before thresholding), so with ``threshold=0`` and ``padding=0`` the box is the support of the unit's
    relevance, i.e. its receptive field wherever the input and weights are nonzero. A unit without any relevance
    gets the whole sample.

    Parameters
    ----------
    attributor
        The engine; its model and composite are reused with a :class:`~glocal.NeuronConcept` at ``layer``.
    samples
        ``(n, C, H, W)`` model inputs.
    layer, channel
        The concept.
    positions
        For each sample, the flat spatial index ``h * W' + w`` of the concept's most relevant unit in ``layer``'s
        ``(H', W')`` map (what the dataset index stores).
    targets, mode
        As in :func:`reference_heatmaps`.
    threshold
        Fraction of the largest ``|relevance|`` a pixel must exceed to count, in ``[0, 1)``.
    padding
        Pixels added on each side (clipped at the borders).

    Returns
    -------
    list of (top, left, bottom, right)
        ``bottom`` and ``right`` exclusive.
    """
    _check_mode(mode)
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold is a fraction of the largest relevance in [0, 1), got {threshold}")
    if padding < 0:
        raise ValueError(f"padding must be a number of pixels >= 0, got {padding}")
    n = samples.shape[0]
    targets = _check_per_sample(targets, n, "targets", needed=mode == "relevance")
    checked_positions = _check_per_sample(positions, n, "positions", needed=True)
    assert checked_positions is not None
    neurons = Attributor(
        attributor.model,
        attributor.composite,
        concepts={layer: NeuronConcept()},
        output_name=attributor.output_name,
    )
    with neurons.session(samples, layers=[layer], sole_path=True, **_start(layer, mode)) as run:
        activation = run.probes[layer].below
        assert activation is not None
        shape = activation.shape[1:]
        spatial = math.prod(shape[1:])
        for position in checked_positions:
            if not 0 <= position < spatial:
                raise InputError(
                    f"position {position} is outside layer {layer!r}'s spatial map of {spatial} units "
                    f"(shape {tuple(shape[1:])}); give flat indices h * W + w"
                )
        ids = PerSample([[NeuronConcept.index(shape, channel, *_unravel(p, shape[1:]))] for p in checked_positions])
        condition, _ = _condition(layer, ids, targets, mode)
        result = run.attribute(condition)
    assert result.heatmap is not None
    return [_box(heatmap, threshold, padding) for heatmap in result.heatmap]


def _unravel(position: int, spatial: Sequence[int]) -> tuple[int, ...]:
    index = []
    for size in reversed(spatial):
        index.append(position % size)
        position //= size
    return tuple(reversed(index))


# -- pictures ---------------------------------------------------------------------------------------------------------


def _fit(tensor: torch.Tensor, size: int, fill: float) -> torch.Tensor:
    """``(C, h, w)`` resized so its longer side is ``size`` (aspect kept), centred on a ``size``-square of ``fill``."""
    channels, height, width = tensor.shape
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = F.interpolate(
        tensor[None].float(), size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=scale < 1
    )[0].clamp(0, 1)
    out = torch.full((channels, size, size), fill, dtype=resized.dtype)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    out[:, top : top + new_height, left : left + new_width] = resized
    return out


def _check_images(images: torch.Tensor, heatmaps: torch.Tensor | None, boxes: Sequence[Box]) -> None:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"images must be shaped (n, 1 or 3, H, W) with values in [0, 1], got {tuple(images.shape)}")
    if heatmaps is not None and tuple(heatmaps.shape) != (images.shape[0], *images.shape[2:]):
        raise InputError(
            f"heatmaps must be shaped (n, H, W) = {(images.shape[0], *images.shape[2:])} to match the images, "
            f"got {tuple(heatmaps.shape)}"
        )
    if len(boxes) != images.shape[0]:
        raise InputError(f"give one box per image: got {len(boxes)} boxes for {images.shape[0]} images")


def crop_images(
    images: torch.Tensor, boxes: Sequence[Box], *, size: int = 112, background: float = 0.0, crop: bool = True
) -> torch.Tensor:
    """Images ``(n, C, H, W)`` cropped to ``boxes``, resized keeping their aspect ratio and padded to a square.

    Returns ``(n, C, size, size)``; values outside [0, 1] are clipped.
    """
    _check_images(images, None, boxes)
    out = []
    for image, (top, left, bottom, right) in zip(images.detach().cpu(), boxes, strict=True):
        if crop:
            image = image[:, top:bottom, left:right]
        out.append(_fit(image, size, background))
    return torch.stack(out)


def render_references(
    images: torch.Tensor,
    heatmaps: torch.Tensor,
    boxes: Sequence[Box],
    *,
    size: int = 112,
    opacity: float = 0.2,
    threshold: float = 0.2,
    background: float = 0.0,
    crop: bool = True,
) -> list[Image.Image]:
    """Reference pictures: each image cropped to its box, the part where the concept is irrelevant faded out.

    Inside the crop, a pixel counts as relevant when its heatmap value exceeds ``threshold`` times the crop's largest
    (positive) relevance, as in zennit-crp's ``vis_opaque_img`` (but without blurring). Other pixels are blended
    towards the flat ``background``: ``opacity * image + (1 - opacity) * background``. The result is resized so its
    longer side is ``size`` and padded with ``background`` to a square.

    Parameters
    ----------
    images
        ``(n, C, H, W)`` images for display, values in [0, 1] (not normalised for the model).
    heatmaps
        ``(n, H, W)`` the concept's heatmaps (e.g. from :func:`reference_heatmaps`).
    boxes
        ``(top, left, bottom, right)`` per image (e.g. from :func:`receptive_field_boxes`).
    size
        Side of the square output in pixels.
    opacity
        How much of the image survives in the irrelevant part: 0 gives flat ``background``, 1 no fading.
    threshold
        Fraction of the largest relevance in the crop below which a pixel is faded, in ``[0, 1)``.
    background
        Grey level of the fade and padding: 0 (default) darkens the irrelevant part as in zennit-crp and the CRP
        paper, which keeps bright objects on dark backgrounds readable; 1 is white, 0.5 grey.
    crop
        Crop to the boxes; without it the whole image is shown (still faded).

    Returns
    -------
    list of PIL.Image.Image
        ``size`` by ``size`` RGB images.
    """
    _check_images(images, heatmaps, boxes)
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold is a fraction of the largest relevance in [0, 1), got {threshold}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    pictures = []
    for image, heatmap, (top, left, bottom, right) in zip(
        images.detach().cpu().float(), heatmaps.detach().cpu().float(), boxes, strict=True
    ):
        if crop:
            image, heatmap = image[:, top:bottom, left:right], heatmap[top:bottom, left:right]
        peak = float(heatmap.max()) if heatmap.numel() else 0.0
        relevant = heatmap > threshold * peak if peak > 0 else torch.zeros_like(heatmap, dtype=torch.bool)
        faded = opacity * image + (1 - opacity) * background
        shown = torch.where(relevant[None], image, faded)
        fitted = _fit(shown, size, background)
        if fitted.shape[0] == 1:
            fitted = fitted.expand(3, -1, -1)
        array = (fitted.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pictures.append(Image.fromarray(np.ascontiguousarray(array), mode="RGB"))
    return pictures


def reference_grid(
    images: Sequence[Image.Image],
    *,
    columns: int = 4,
    title: str | None = None,
    margin: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
    empty_size: int = 64,
) -> Image.Image:
    """Tile images (of any sizes) row by row into one RGB image, with an optional title strip on top.

    Without images (a concept without references) the result is one empty grey cell of ``empty_size`` pixels
    marked "none", so that a figure keeps its layout.
    """
    if columns < 1:
        raise ValueError(f"columns must be a positive number, got {columns}")
    if not images:
        cell = Image.new("RGB", (empty_size, empty_size), (200, 200, 200))
        ImageDraw.Draw(cell).text((4, empty_size // 2 - 6), "none", fill=(90, 90, 90))
        images = [cell]
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    cell_width = max(image.width for image in images)
    cell_height = max(image.height for image in images)
    title_height = 18 if title else 0
    width = columns * cell_width + (columns + 1) * margin
    height = title_height + rows * cell_height + (rows + 1) * margin
    grid = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((margin, 3), title, fill=(0, 0, 0))
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        x = margin + column * (cell_width + margin) + (cell_width - image.width) // 2
        y = title_height + margin + row * (cell_height + margin) + (cell_height - image.height) // 2
        grid.paste(image.convert("RGB"), (x, y))
    return grid


def _heatmaps_and_boxes(
    attributor: Attributor,
    samples: torch.Tensor,
    layer: str,
    channels: Sequence[int],
    positions: Sequence[int],
    targets: Sequence[int] | None,
    mode: Mode,
    threshold: float,
    padding: int,
) -> tuple[torch.Tensor, list[Box]]:
    """:func:`reference_heatmaps` and :func:`receptive_field_boxes` in one forward pass, one channel per sample.

    A channel is the set of all its units, so both conditions use :class:`~glocal.NeuronConcept` ids; they differ
    only at ``layer``, so the engine also shares the backward pass above it. Samples of different concepts share
    the batch.
    """
    _check_mode(mode)
    n = samples.shape[0]
    targets = _check_per_sample(targets, n, "targets", needed=mode == "relevance")
    checked = _check_per_sample(positions, n, "positions", needed=True)
    chosen = _check_per_sample(channels, n, "channels", needed=True)
    assert checked is not None and chosen is not None
    neurons = Attributor(
        attributor.model, attributor.composite, concepts={layer: NeuronConcept()}, output_name=attributor.output_name
    )
    with neurons.session(samples, layers=[layer], sole_path=True, **_start(layer, mode)) as run:
        activation = run.probes[layer].below
        assert activation is not None
        shape = activation.shape[1:]
        spatial = math.prod(shape[1:])
        for channel in chosen:
            if not 0 <= channel < shape[0]:
                raise InputError(f"channel {channel} is out of range: layer {layer!r} has {shape[0]} channels")
        for position in checked:
            if not 0 <= position < spatial:
                raise InputError(
                    f"position {position} is outside layer {layer!r}'s spatial map of {spatial} units "
                    f"(shape {tuple(shape[1:])}); give flat indices h * W + w"
                )
        whole = PerSample([range(c * spatial, (c + 1) * spatial) for c in chosen])
        units = PerSample([[c * spatial + p] for c, p in zip(chosen, checked, strict=True)])
        conditions = [_condition(layer, ids, targets, mode)[0] for ids in (whole, units)]
        result = run.attribute(conditions)
    assert result.heatmap is not None
    both = result.grid(result.heatmap)
    return both[:, 0], [_box(heatmap, threshold, padding) for heatmap in both[:, 1]]


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
    _check_mode(mode)
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
                checked = _check_per_sample(item.targets, item.samples.shape[0], "targets", needed=True)
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
                _heatmaps_and_boxes(
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


# -- from a concept index -------------------------------------------------------------------------------------------

ImageFunction = Callable[[torch.Tensor], torch.Tensor]
_RENDER_THRESHOLD = 0.2  # render_references' default, which make_reference uses
_CACHE_FORMAT = "glocal.references/2"  # 2: dark fade by default


def min_max_image(inputs: torch.Tensor) -> torch.Tensor:
    """Model inputs ``(n, C, H, W)`` as images in [0, 1]: each sample min-max normalised over all its values.

    A constant sample becomes mid-grey. Use it as ``to_image`` when the inputs' normalisation is unknown; with a
    known one (mean and std), undoing it shows the true colours.
    """
    flat = inputs.detach().float().flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = torch.where(high > low, high - low, torch.ones_like(high))
    scaled = (flat - low[:, None]) / span[:, None]
    scaled = torch.where((high > low)[:, None], scaled, torch.full_like(scaled, 0.5))
    return scaled.reshape(inputs.shape)


def _qualname(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None) or type(function).__module__
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{name}"


def _display(inputs: torch.Tensor, to_image: ImageFunction) -> torch.Tensor:
    """``to_image(inputs)`` checked, on the CPU, clipped to [0, 1]; greyscale made RGB."""
    images = to_image(inputs.detach()).detach().cpu().float()
    if images.dim() != 4 or images.shape[0] != inputs.shape[0] or images.shape[1] not in (1, 3):
        raise InputError(
            f"to_image must map model inputs {tuple(inputs.shape)} to images (n, 1 or 3, H, W), "
            f"got {tuple(images.shape)}"
        )
    if images.shape[2:] != inputs.shape[2:]:
        raise InputError(
            f"to_image must keep the inputs' height and width {tuple(inputs.shape[2:])} (the heatmaps and boxes are "
            f"in input pixels), got {tuple(images.shape[2:])}"
        )
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.clamp(0, 1).contiguous()


def _class_samples(
    index: ConceptIndex, layer: str, concept: int, label: int, n: int
) -> tuple[list[int], list[float], list[int]]:
    """The class top-k of ``concept`` for class ``label`` with a positive score, with the positions the scan stored."""
    index.class_samples(layer, concept, label, 0)  # checks the concept and label (glocal errors with valid ranges)
    ids, scores, positions = index.statistics(layer).class_entries(label, concept)
    keep = scores > 0
    return ids[keep][:n].tolist(), scores[keep][:n].tolist(), positions[keep][:n].tolist()


def _empty_reference(layer: str, channel: int, mode: Mode, size: int) -> Reference:
    """The references of a concept without any sample of positive score: none."""
    return Reference(
        layer=layer,
        channel=int(channel),
        mode=mode,
        sample_ids=(),
        scores=(),
        boxes=(),
        tensors=torch.zeros(0, 3, size, size),
        images=(),
        heatmaps=None,
        targets=None,
    )


def _targets(
    index: ConceptIndex, attributor: Attributor, samples: torch.Tensor, labels: list[Any], label: int | None
) -> list[int]:
    """Each sample's output unit that the index started its relevance from."""
    if label is not None:
        return [label] * samples.shape[0]
    if index.manifest.get("targets") == "label":
        if any(y is None for y in labels):
            raise InputError("the index started relevance from labels, but the dataset items carry none")
        targets = [label_list(y) for y in labels]
        if any(len(t) != 1 for t in targets):
            raise InputError(
                "the index started each multi-label sample's relevance from all its labels together; references "
                "start from one target per sample: pass label=<class> for a class's references"
            )
        return [t[0] for t in targets]
    with torch.no_grad():
        return predicted(attributor.model(samples))


def _check_same_rules(index: ConceptIndex, attributor: Attributor) -> None:
    """Warn when ``attributor``'s model or composite is not the one the index was built with: the references would
    then show other heatmaps than those that ranked the samples."""
    manifest = index.manifest
    model = attributor.model
    ours = {"model": model_fingerprint(model), "composite": composite_fingerprint(attributor.composite, model)}
    ours = json.loads(json.dumps(ours))  # as the manifest stores them (tuples become lists)
    differs = [what for what in ("model", "composite") if what in manifest and manifest[what] != ours[what]]
    if differs:
        warn(
            f"the attributor's {' and '.join(differs)} differ from those the index was built with, so the references' "
            "heatmaps come from other weights or rules than the relevance that ranked their samples; pass an "
            "Attributor of the model and composite given to build_index (composite='auto' resolves to the same "
            "composite for the same model)"
        )


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
    settings = {
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
        "to_image": _qualname(to_image),
    }
    _check_same_rules(index, attributor)
    if cache is not None:
        model = attributor.model
        settings.update(
            index=index.manifest,
            model=model_fingerprint(model),
            composite=None if attributor.composite is None else composite_fingerprint(attributor.composite, model),
            concept_type=_qualname(type(attributor.concept(layer))),
            layer=layer,
        )
    found: dict[int, Reference] = {}
    missing: list[tuple[int, ReferenceSamples, str | None]] = []
    short: list[str] = []
    for channel in dict.fromkeys(concepts):
        if label is None:
            ids, scores, positions = index.samples(layer, channel, mode, n)
            kept = int((index.top(layer, mode).ids[channel][:n] >= 0).sum())
        else:
            ids, scores, positions = _class_samples(index, layer, channel, int(label), n)
            kept = min(n, len(index.statistics(layer).class_entries(int(label), channel)[0]))
        if len(ids) < kept:  # fewer than the index kept: the others have no positive score
            short.append(f"{channel} ({len(ids)})")
        if not ids:
            found[channel] = _empty_reference(layer, channel, reference_mode, size)
            continue
        inputs, labels = load_samples(dataset, ids)
        images = _display(inputs, to_image)
        key = None
        if cache is not None:
            key = cache.key({**settings, "concept": channel, "sample_ids": ids, "positions": positions})
            hit = cache.entry(key)
            if hit is not None and len(hit[0]) == len(ids):
                pictures, meta = hit
                boxes = [(int(t), int(le), int(b), int(r)) for t, le, b, r in meta["boxes"]]
                targets = meta.get("targets")
                found[channel] = Reference(
                    layer=layer,
                    channel=channel,
                    mode=reference_mode,
                    sample_ids=tuple(ids),
                    scores=tuple(float(s) for s in scores),
                    boxes=tuple(boxes),
                    tensors=crop_images(images, boxes, size=size, crop=crop),
                    images=tuple(picture.convert("RGB") for picture in pictures),
                    targets=None if targets is None else tuple(int(t) for t in targets),
                )
                continue
        samples = inputs.to(model_device(attributor.model))
        targets = _targets(index, attributor, samples, labels, label) if reference_mode == "relevance" else None
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
            meta = {
                "layer": layer,
                "concept": channel,
                "mode": mode,
                "label": label,
                "sample_ids": list(reference.sample_ids),
                "scores": list(reference.scores),
                "boxes": [list(box) for box in reference.boxes],
                "targets": None if reference.targets is None else list(reference.targets),
            }
            cache.put(key, list(reference.images), meta)
        found[channel] = reference
    if single:
        return found[concepts[0]]
    return {channel: found[channel] for channel in concepts}
