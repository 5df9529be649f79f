"""Checks every entry point runs on the user's input before any hook is attached: autograd on, a float batch."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import GradientDisabledError, InputError

__all__ = ["check_gradients_enabled", "check_input", "check_one_sample", "dtype_problem"]


def check_gradients_enabled() -> None:
    """Raise :class:`GradientDisabledError` when autograd is off."""
    if torch.is_inference_mode_enabled():
        raise GradientDisabledError(
            "glocal was called inside torch.inference_mode(), where autograd cannot run. Call it outside that block."
        )
    if not torch.is_grad_enabled():
        raise GradientDisabledError(
            "glocal was called under torch.no_grad(), but relevance propagation runs on autograd. "
            "Call it outside the no_grad block, or wrap the call in `with torch.enable_grad():`."
        )


def check_input(data: Any) -> torch.Tensor:
    """Validate a batch of input data and return it."""
    if not isinstance(data, torch.Tensor):
        raise InputError(
            f"data must be a torch.Tensor batch shaped (N, ...), got {type(data).__name__}. "
            "Convert it with torch.as_tensor(...)."
        )
    if not data.is_floating_point():
        raise InputError(
            f"data must be floating point, got dtype {data.dtype}. Convert it, e.g. data.float() / 255 for "
            "uint8 images, and apply the model's normalisation."
        )
    if data.dim() < 2:
        raise InputError(
            f"data must be a batch shaped (N, ...) with N samples first, got shape {tuple(data.shape)}. "
            "Add the batch dimension with data.unsqueeze(0)."
        )
    if data.is_inference():
        raise InputError(
            "data was created under torch.inference_mode() and cannot be used with autograd; "
            "use data.clone() outside it"
        )
    return data


def check_one_sample(data: Any) -> torch.Tensor:
    """Validate one sample, ``(1, ...)`` or unbatched (then given its batch dimension), and return it as a batch."""
    data = check_input(data if not isinstance(data, torch.Tensor) or data.dim() > 1 else data.unsqueeze(0))
    if data.shape[0] != 1:
        raise InputError(
            f"an attribution graph explains one sample; got a batch of {data.shape[0]}. Pass data[i:i + 1]."
        )
    return data


def dtype_problem(model: torch.nn.Module, data: torch.Tensor) -> str | None:
    """The message for ``data`` whose dtype differs from that of ``model``'s floating point parameters, or ``None``.

    Asked only once the model has failed on ``data``: a model that converts its input itself may take any dtype.
    """
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is None or data.dtype == dtype:
        return None
    return (
        f"the model failed on data of dtype {data.dtype}, but its parameters are {dtype}; both must be the same. "
        f"Convert the data with data.to({dtype}) (or the model with model.to({data.dtype}))."
    )
