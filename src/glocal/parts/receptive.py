"""Receptive fields: the input pixel a layer's cell looks at, and the raw-channel position baseline of Zhang et al.

A layer's cell ``(i, j)`` maps to the input pixel ``(scale[0] * i + offset[0], scale[1] * j + offset[1])``: the centre
of the input region its value depends on. :func:`receptive_field` finds scale, offset and size by probing, not by
reading the modules, so residual blocks, pooling, dilation and padding are all covered: on a float64 copy of the model,
the gradient of the layer's cells with respect to random inputs reaches exactly the pixels the cell depends on (its
support). A cell whose support touches the input's border may be clipped by padding, so the input is enlarged (the
forward pass stops at the layer, so the layers after it need not accept the size) until three interior cells along the
diagonal see their whole field; two give scale and offset per axis, the third must agree.

>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2, padding=1))
>>> receptive_field(net, "0", torch.zeros(1, 1, 16, 16))
ReceptiveField(scale=(2.0, 2.0), offset=(0.0, 0.0), size=(3, 3))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..attribution.layers import resolve_layers
from ..errors import InputError, LayerError, warn

__all__ = ["ReceptiveField", "channel_positions", "receptive_field"]

_GROWTH = (1, 2, 4)  # input enlargements tried until the probed cells' fields lie inside the input
_ROUNDS = (2, 8)  # rounds of random inputs: at least, at most (more while the union of supports still grows)


@dataclass(frozen=True)
class ReceptiveField:
    """Where a layer's cells look in the input: cell ``(i, j)`` is centred on input pixel
    ``(scale[0] * i + offset[0], scale[1] * j + offset[1])`` (row, column) and sees ``size`` pixels (rows, columns)."""

    scale: tuple[float, float]
    offset: tuple[float, float]
    size: tuple[int, int]

    def centres(self, cells: torch.Tensor) -> torch.Tensor:
        """Input pixels ``(..., 2)`` (row, column, float) of layer cells ``(..., 2)`` (row, column).

        >>> ReceptiveField((2.0, 2.0), (1.0, 0.5), (5, 5)).centres(torch.tensor([[0, 0], [3, 1]])).tolist()
        [[1.0, 0.5], [7.0, 2.5]]
        """
        dtype = cells.dtype if cells.is_floating_point() else torch.get_default_dtype()
        scale = torch.tensor(self.scale, dtype=dtype, device=cells.device)
        offset = torch.tensor(self.offset, dtype=dtype, device=cells.device)
        return cells.to(dtype) * scale + offset

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {"scale": list(self.scale), "offset": list(self.offset), "size": list(self.size)}


class _Stop(Exception):
    """Raised by the capturing hook: the forward pass need not run past the layer."""


def _layer_output(model: torch.nn.Module, module: torch.nn.Module, inputs: torch.Tensor, layer: str) -> torch.Tensor:
    captured: list[object] = []

    def capture(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        captured.append(output)
        raise _Stop

    handle = module.register_forward_hook(capture)
    try:
        model(inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise LayerError(f"layer {layer!r} did not run in the model's forward pass; choose a layer that does")
    output = captured[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise LayerError(
            f"layer {layer!r} must output feature maps (N, C, H, W) to have a receptive field, got {shape}; "
            "choose a convolution, activation or pooling layer before the model flattens its maps"
        )
    return output


def _supports(
    probe: torch.nn.Module, module: torch.nn.Module, layer: str, shape: tuple[int, ...], generator: torch.Generator
) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor], tuple[int, int]] | None:
    """Three diagonal cells' supports (rows, columns: boolean masks over the input), unioned over random inputs; None
    when the layer's map is smaller than 3 x 3. ReLUs and max pooling pass gradient only where open, so one input can
    show too small a support: rounds of inputs (each with its negative, which opens the first layer's other gates)
    continue while the union grows."""
    channels, height, width = shape
    pairs = 2 if height * width <= 128 * 128 else 1  # random inputs per round (each with its negative)
    rows: list[torch.Tensor] = []
    cols: list[torch.Tensor] = []
    cells: list[int] = []
    out_size = (0, 0)
    for round_ in range(_ROUNDS[1]):
        noise = torch.randn(
            pairs, channels, height, width, generator=generator, dtype=torch.float64, device=generator.device
        )
        inputs = torch.cat([noise, -noise]).requires_grad_(True)
        output = _layer_output(probe, module, inputs, layer)
        out_size = (output.shape[2], output.shape[3])
        if min(out_size) < 3:
            return None
        if not output.requires_grad:
            raise LayerError(f"layer {layer!r}'s output does not depend on the input, so it has no receptive field")
        middle = min(out_size) // 2
        cells = [middle - 1, middle, middle + 1]
        grown = False
        for k, cell in enumerate(cells):
            seed = torch.zeros_like(output)  # random weights over channels: channels cannot cancel each other out
            seed[:, :, cell, cell] = (
                torch.rand(output.shape[:2], generator=generator, dtype=output.dtype, device=output.device) + 0.5
            )
            (gradient,) = torch.autograd.grad(output, inputs, seed, retain_graph=k < 2)
            reached = gradient.abs().sum(dim=(0, 1)) > 0  # (H, W)
            if round_ == 0:
                rows.append(reached.any(dim=1))
                cols.append(reached.any(dim=0))
                continue
            new_rows, new_cols = rows[k] | reached.any(dim=1), cols[k] | reached.any(dim=0)
            grown |= not (torch.equal(new_rows, rows[k]) and torch.equal(new_cols, cols[k]))
            rows[k], cols[k] = new_rows, new_cols
        if round_ + 1 >= _ROUNDS[0] and not grown:
            break
    return cells, rows, cols, out_size


def _fit(cells: list[int], masks: list[torch.Tensor]) -> tuple[float, float, int] | None:
    """Scale, offset and size along one axis, or None when a field touches the border or the cells disagree."""
    spans = []
    for mask in masks:
        where = torch.nonzero(mask).flatten()
        if where.numel() == 0 or int(where[0]) == 0 or int(where[-1]) == mask.numel() - 1:
            return None
        spans.append((int(where[0]), int(where[-1])))
    centres = [(low + high) / 2 for low, high in spans]
    scale = (centres[2] - centres[0]) / (cells[2] - cells[0])
    offset = centres[0] - scale * cells[0]
    if abs(scale * cells[1] + offset - centres[1]) > 1e-9 or len({high - low for low, high in spans}) != 1:
        return None
    return scale, offset, spans[1][1] - spans[1][0] + 1


def receptive_field(model: torch.nn.Module, layer: str, example: torch.Tensor) -> ReceptiveField:
    """The receptive field of ``layer``'s cells for inputs shaped like ``example`` ``(N, C, H, W)``.

    Probes a float64 copy of ``model`` in eval mode (``model`` itself is not touched). When no interior cells can be
    found (the layer's map stays smaller than 3 x 3, or its fields cover the input even when enlarged four times) or the
    cells disagree (a layer whose map does not follow the input, e.g. after adaptive pooling to a fixed size), it warns
    and falls back to the proportional map ``(i + 0.5) * H / H' - 0.5``.

    Raises
    ------
    InputError
        ``example`` is not a 4-d tensor.
    LayerError
        ``layer`` is not a layer of ``model``, does not run, or does not output ``(N, C, H', W')``.

    Notes
    -----
    A module that runs several times in one forward pass is taken at its first call.
    """
    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        shape = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__
        raise InputError(f"example must be a tensor (N, C, H, W) like the model's inputs, got {shape}")
    resolve_layers(model, [layer])
    probe = copy.deepcopy(model).double().eval().to(example.device)
    for parameter in probe.parameters():
        parameter.requires_grad_(False)
    module = dict(probe.named_modules())[layer]
    channels, height, width = example.shape[1:]
    with torch.no_grad():
        base = _layer_output(
            probe, module, torch.zeros(1, *example.shape[1:], dtype=torch.float64, device=example.device), layer
        ).shape
    generator = torch.Generator(device=example.device).manual_seed(0)
    size = (height, width)
    with torch.enable_grad():
        for growth in _GROWTH:
            found = _supports(probe, module, layer, (channels, height * growth, width * growth), generator)
            if found is None:
                continue
            cells, rows, cols, out_size = found
            if growth > 1 and out_size[0] <= base[2]:
                break  # the map does not grow with the input: not a translation-equivariant stack
            if growth == 1:
                size = (int(rows[1].sum()), int(cols[1].sum()))
            along_rows, along_cols = _fit(cells, rows), _fit(cells, cols)
            if along_rows is not None and along_cols is not None:
                return ReceptiveField(
                    (along_rows[0], along_cols[0]), (along_rows[1], along_cols[1]), (along_rows[2], along_cols[2])
                )
    scale = (height / base[2], width / base[3])
    warn(
        f"could not find layer {layer!r}'s receptive field from interior cells (its map of {base[2]} x {base[3]} is "
        "too small, its fields cover the input, or its cells disagree); using the proportional map "
        f"(i + 0.5) * scale - 0.5 with scale {scale[0]:.3g} x {scale[1]:.3g}"
    )
    return ReceptiveField(scale, (scale[0] / 2 - 0.5, scale[1] / 2 - 0.5), size)


def channel_positions(
    model: torch.nn.Module,
    data: torch.Tensor,
    layer: str,
    *,
    field: ReceptiveField | None = None,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw-channel baseline of Zhang et al.: per image and channel of ``layer``, the argmax of the channel's
    activation map, mapped to the input through the receptive field's centre.

    Returns ``positions`` ``(N, C, 2)`` (row, column in input pixels, float) and ``scores`` ``(N, C)``, each the
    channel's maximum activation. Ties go to the first cell in row-major order. ``field`` defaults to
    :func:`receptive_field` for ``data[:1]``. The model runs in eval mode without gradients, and is left as it was.
    """
    if not isinstance(data, torch.Tensor) or data.dim() != 4:
        shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise InputError(f"data must be a tensor (N, C, H, W) of the model's inputs, got {shape}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    module = resolve_layers(model, [layer])[layer]
    if field is None:
        field = receptive_field(model, layer, data[:1])
    training = {submodule: submodule.training for submodule in model.modules()}
    positions: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, data.shape[0], batch_size):
                maps = _layer_output(model, module, data[start : start + batch_size], layer)
                width = maps.shape[3]
                best, index = maps.flatten(2).max(dim=2)
                positions.append(field.centres(torch.stack([index // width, index % width], dim=-1)))
                scores.append(best)
    finally:
        for submodule, flag in training.items():
            submodule.training = flag
    return torch.cat(positions), torch.cat(scores)
