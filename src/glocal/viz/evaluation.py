"""Drawings of the faithfulness evaluations: concept flipping curves and heatmap deletion / insertion curves.

Both need matplotlib (``pip install glocal[viz]``), imported when first called; with ``ax`` they draw into the given
axes, otherwise they return a new :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .images import require_matplotlib

if TYPE_CHECKING:
    from ..evaluation.deletion import DeletionResult
    from ..evaluation.flipping_result import FlippingResult

__all__ = ["deletion_figure", "flipping_figure"]

COLOURS = {"morf": "tab:red", "lerf": "tab:blue", "actmax": "tab:green", "random": "tab:gray", "heatmap": "tab:red"}


def _axes(ax: Any, size: tuple[float, float]) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    figure_class, canvas_class = require_matplotlib()
    figure = figure_class(figsize=size, dpi=100)
    canvas_class(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _band(ax: Any, x: torch.Tensor, mean: torch.Tensor, spread: torch.Tensor, label: str, colour: str) -> None:
    ax.plot(x.tolist(), mean.tolist(), color=colour, label=label)
    ax.fill_between(x.tolist(), (mean - spread).tolist(), (mean + spread).tolist(), color=colour, alpha=0.2, lw=0)


def flipping_figure(result: FlippingResult, *, of: str = "logit", ax: Any = None) -> Any:
    """The sample-mean ``of`` (``"logit"`` or ``"probability"``) against the fraction of channels switched off, one
    line per order; the random orders as their mean with a band of ± the mean (over samples) standard deviation over
    seeds. The legend gives each order's AOPC."""
    figure, ax = _axes(ax, (5.5, 3.8))
    x = torch.tensor(result.switched_off, dtype=torch.float64) / result.channels
    for order in result.orders:
        mean = result.curves(order, of).mean(0)
        label = f"{order} (AOPC {result.aopc(order, of):.3g})"
        if order == "random":
            _band(ax, x, mean, result.spread(of).mean(0), label, COLOURS["random"])
        else:
            ax.plot(x.tolist(), mean.tolist(), color=COLOURS.get(order), label=label)
    ax.set_xlabel(f"fraction of the {result.channels} channels of {result.layer} switched off")
    ax.set_ylabel(f"target {of} (mean of {len(result.targets)} samples)")
    ax.set_title("concept flipping")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def deletion_figure(result: DeletionResult, *, ax: Any = None) -> Any:
    """The sample-mean normalised concept relevance against the fraction of input positions deleted (or inserted),
    one colour per concept: heatmap order solid, random orders dashed. The legend gives the areas."""
    figure, ax = _axes(ax, (5.5, 3.8))
    x = list(result.fractions)
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive"]
    has_random = bool(result.random_relevance.shape[0])
    for m, (layer, channel) in enumerate(result.concepts):
        colour = colours[m % len(colours)]
        heatmap = result.curves(m).nanmean(0)
        ax.plot(x, heatmap.tolist(), color=colour, label=f"{layer}:{channel} heatmap ({result.area(m):.3g})")
        if has_random:
            random = result.curves(m, "random").nanmean(0)
            label = f"{layer}:{channel} random ({result.area(m, 'random'):.3g})"
            ax.plot(x, random.tolist(), color=colour, linestyle="--", label=label)
    ax.set_xlabel(f"fraction of input positions {'deleted' if result.mode == 'deletion' else 'inserted'}")
    ax.set_ylabel("concept relevance / unperturbed")
    ax.set_title(f"heatmap {result.mode} (area: {'lower' if result.mode == 'deletion' else 'higher'} is better)")
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
