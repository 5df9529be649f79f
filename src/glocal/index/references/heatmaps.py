"""Computing references: the concept's heatmap on each sample, and each sample's receptive-field box.

Both are engine calls on the sample batch (:class:`~glocal.Attributor`): :func:`reference_heatmaps` gives the concept's
conditional heatmap ``R(x | theta)``, :func:`receptive_field_boxes` the input region that the concept's single most
relevant unit (channel and position) draws its relevance from, and :func:`heatmaps_and_boxes` both in one forward pass.
How the relevance starts (``mode``) is described in :mod:`glocal.index.references`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ...attribution.concepts import NeuronConcept
from ...attribution.conditions import Condition, PerSample
from ...attribution.engine import Attributor
from ...errors import InputError
from .reference import Box, Mode, check_mode

__all__ = ["check_per_sample", "heatmaps_and_boxes", "positive_part", "receptive_field_boxes", "reference_heatmaps"]


def check_per_sample(values: Sequence[int] | None, n: int, what: str, needed: bool) -> list[int] | None:
    """``values`` as one int per sample (``n`` of them); ``None`` when not given and not ``needed``."""
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
    check_mode(mode)
    targets = check_per_sample(targets, samples.shape[0], "targets", needed=mode == "relevance")
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
    check_mode(mode)
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold is a fraction of the largest relevance in [0, 1), got {threshold}")
    if padding < 0:
        raise ValueError(f"padding must be a number of pixels >= 0, got {padding}")
    n = samples.shape[0]
    targets = check_per_sample(targets, n, "targets", needed=mode == "relevance")
    checked_positions = check_per_sample(positions, n, "positions", needed=True)
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


def heatmaps_and_boxes(
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
    check_mode(mode)
    n = samples.shape[0]
    targets = check_per_sample(targets, n, "targets", needed=mode == "relevance")
    checked = check_per_sample(positions, n, "positions", needed=True)
    chosen = check_per_sample(channels, n, "channels", needed=True)
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
