"""Areas of perturbation curves: AOPC, ABPC and the normalised area under a deletion or insertion curve.

All take curves ``(N, S + 1)`` (one row per sample, one column per step; step 0 unperturbed for flipping) and return
one value per sample; the result objects average them over samples.

* **AOPC** (area over the perturbation curve, Samek et al. 2017): ``(1 / (S + 1)) * sum_s (f(x) - f(x_{k_s}))``,
  ``f(x)`` the unperturbed value (column 0). Large: removing in this order destroys the output quickly.
* **ABPC** (area between the perturbation curves, Schulz et al. 2020): ``(1 / (S + 1)) * sum_s (f_LeRF(k_s) -
  f_MoRF(k_s))``. Large: the order separates important from unimportant units well.
* **normalised area**: the trapezoid area under ``curve / reference`` over the fraction removed (or inserted), 0 to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError

__all__ = ["abpc", "aopc", "normalised_area"]


def _curves(curves: torch.Tensor, what: str) -> torch.Tensor:
    curves = torch.as_tensor(curves, dtype=torch.float64)
    if curves.dim() != 2 or curves.shape[1] < 1:
        raise InputError(f"{what} must be curves shaped (samples, steps + 1), got shape {tuple(curves.shape)}")
    return curves


def aopc(curves: torch.Tensor) -> torch.Tensor:
    """Per-sample AOPC of ``(N, S + 1)`` curves whose column 0 is the unperturbed value.

    >>> aopc(torch.tensor([[4.0, 3.0, 1.0, 0.0]]))   # (0 + 1 + 3 + 4) / 4
    tensor([2.], dtype=torch.float64)
    """
    curves = _curves(curves, "curves")
    return (curves[:, :1] - curves).mean(1)


def abpc(lerf: torch.Tensor, morf: torch.Tensor) -> torch.Tensor:
    """Per-sample ABPC: the mean over steps of the LeRF curve minus the MoRF curve.

    >>> abpc(torch.tensor([[4.0, 4.0, 3.0]]), torch.tensor([[4.0, 1.0, 0.0]]))   # (0 + 3 + 3) / 3
    tensor([2.], dtype=torch.float64)
    """
    lerf, morf = _curves(lerf, "lerf"), _curves(morf, "morf")
    if lerf.shape != morf.shape:
        raise InputError(f"lerf and morf curves must have the same shape, got {tuple(lerf.shape)} and {morf.shape}")
    return (lerf - morf).mean(1)


def normalised_area(curves: torch.Tensor, fractions: Sequence[float], reference: torch.Tensor) -> torch.Tensor:
    """Per-sample trapezoid area under ``curves / reference`` over ``fractions`` (0 to 1); ``nan`` where the
    reference is not positive (nothing to normalise by).

    >>> normalised_area(torch.tensor([[2.0, 1.0, 0.0]]), [0.0, 0.5, 1.0], torch.tensor([2.0]))   # (0.75 + 0.25) / 2
    tensor([0.5000], dtype=torch.float64)
    """
    curves = _curves(curves, "curves")
    x = torch.as_tensor(list(fractions), dtype=torch.float64)
    if x.numel() != curves.shape[1]:
        raise InputError(f"got {x.numel()} fractions for curves of {curves.shape[1]} steps")
    reference = torch.as_tensor(reference, dtype=torch.float64).reshape(-1, 1)
    normalised = torch.where(reference > 0, curves / reference.clamp(min=1e-300), torch.nan)
    return torch.trapezoid(normalised, x, dim=1)
