"""Checks that LRP conserved relevance: once per model and composite, and once per call.

LRP distributes the relevance a backward pass starts with over the input; summed, the heatmap should give back
about what it started from. Two checks tell the user when it does not:

* :func:`structure_problems` (once per :class:`~glocal.Attributor`, on its first forward pass, while the composite is
  attached): batch norms that no canonizer merged, and additions of two computed tensors that no canonizer routed
  through a module. Each breaks conservation or the rules' meaning, silently.
* :class:`KeptRelevance` (every call, from sums the engine has anyway): the *kept fraction* of the call's heatmap rows,
  ``k = sum_rows sign(S_r) * H_r / sum_rows |S_r|`` with ``S_r`` the relevance a row's backward pass started from
  (the target logit, or for a conditioned row the masked relevance at its lowest conditioned layer) and ``H_r`` the
  sum of its heatmap. Rows are weighted by the size of their starting relevance, so that rows that start from almost
  nothing (a small logit, a concept with little relevance) cannot dominate. A :class:`~glocal.ConservationWarning`
  is emitted when ``|k - 1| > TOLERANCE``.

Why ``TOLERANCE = 0.5``: measured with the composites ``"auto"`` picks, the pretrained MNIST CNN keeps 0.95--1.01 of
every digit's logit (0.98--1.00 for batches of 4 or more), torchvision's VGG16 (random weights) 1.00, ResNet18 0.94--
1.01, and the trained FashionMNIST CNN, whose merged batch-norm biases absorb part of the relevance, 0.96--1.03 for 90
% of single validation images under the bias-free rules auto gives it (0.77--1.26 per batch of 4 or more under z+
rules that count its merged biases). Broken set-ups lie far outside: an uncovered residual add doubles the relevance
(k about 2; ResNet18 without its canonizer 254), and MobileNetV2's merged batch-norm biases, under rules that count
them, absorb all but 0.1--0.7 % (k about 0.001). Half of the relevance gained or lost is where concept shares stop
describing the prediction and start describing what is left of it.
"""

from __future__ import annotations

import logging

import torch

from .model_structure import describe_names, uncovered_additions, unmerged_batch_norms

__all__ = ["TOLERANCE", "KeptRelevance", "structure_problems"]

_logger = logging.getLogger(__name__)

TOLERANCE = 0.5
"""A call warns when its kept fraction ``k`` departs from 1 by more than this."""

_SILENCE = "To silence it: warnings.filterwarnings('ignore', category=glocal.{category})."


class KeptRelevance:
    """Per-row starting relevance and heatmap sums of one call, and the warning they call for."""

    def __init__(self) -> None:
        self._starts: list[torch.Tensor] = []
        self._kept: list[torch.Tensor] = []

    def add(self, start: torch.Tensor, heatmap: torch.Tensor) -> None:
        """Record one backward pass: ``start`` the relevance it started from, ``heatmap`` the relevance at the input
        (both ``(N, ...)``)."""
        n = start.shape[0]
        self._starts.append(start.detach().reshape(n, -1).sum(1).double())
        self._kept.append(heatmap.detach().reshape(n, -1).sum(1).double())

    def fraction(self) -> float | None:
        """The kept fraction ``k`` of the rows recorded so far; ``None`` without rows that start from anything."""
        if not self._starts:
            return None
        starts = torch.cat([s.cpu() for s in self._starts])
        kept = torch.cat([k.cpu() for k in self._kept])
        total = starts.abs().sum()
        if not bool(total > 0) or not bool(torch.isfinite(total)):
            return None
        return float((kept * starts.sign()).sum() / total)

    def rows(self) -> int:
        return sum(s.numel() for s in self._starts)

    def message(self, auto_architecture: str | None = None) -> str | None:
        """The warning's text when the kept fraction departs from 1 by more than :data:`TOLERANCE`, else ``None``.

        ``auto_architecture``: the architecture ``composite="auto"`` detected, when the call used it (the advice then
        does not suggest ``"auto"`` again)."""
        fraction = self.fraction()
        if fraction is None:
            return None
        if abs(fraction - 1) <= TOLERANCE:
            _logger.debug("kept fraction %.4f over %d rows", fraction, self.rows())
            return None
        if fraction < 1:
            cause = (
                "Relevance is absorbed (below 0: outweighed and reversed) on the way down, most often by biases (e.g. "
                "of batch norms merged into the convolutions) or by large epsilon stabilisers; concept shares are then "
                "shares of what is left."
            )
            fix = (
                "Try composite='auto' (the rules and canonizers glocal recommends for the architecture), the "
                "bias-free rules of glocal.lrp.bias_rules (zennit's zero_params='bias' can overflow), or a smaller "
                "epsilon."
            )
        else:
            cause = (
                "Relevance is created on the way down, most often by an addition in the model's forward (a residual "
                "x + f(x)) that no canonizer routes through a zennit.layer.Sum module: autograd hands the whole "
                "relevance to both summands."
            )
            fix = "Try composite='auto', or add the architecture's canonizer (e.g. zennit's ResNetCanonizer)."
        if auto_architecture is not None:
            fix = (
                f"composite='auto' detected the architecture {auto_architecture!r} (glocal.lrp.composites.auto(model) "
                "says what it chose); if that is wrong, or for an uncertain prediction whose small logit the biases "
                "outweigh, pass a composite of your own, e.g. with the bias-free rules of glocal.lrp.bias_rules."
            )
        rows = f"{self.rows()} row" + ("" if self.rows() == 1 else "s")
        return (
            f"the heatmaps of this call keep {fraction:.4g} of the relevance they started from "
            f"({rows}; summed input relevance / starting relevance, expected within 1 ± {TOLERANCE}). "
            f"{cause} {fix} {_SILENCE.format(category='ConservationWarning')}"
        )


def structure_problems(model: torch.nn.Module, output: torch.Tensor, input: torch.Tensor) -> str | None:
    """The text of a :class:`~glocal.CanonizerWarning` when the attached composite leaves batch norms unmerged or
    additions uncovered; ``None`` when all is covered.

    Call it after a forward pass with the composite's canonizers applied (``output`` and ``input`` of that pass).
    """
    problems = []
    unmerged = unmerged_batch_norms(model)
    if unmerged:
        problems.append(
            f"{len(unmerged)} batch norm(s) that no canonizer merges ({describe_names(unmerged)}): LRP passes "
            "relevance through them unchanged, ignoring their scale and shift"
        )
    additions = uncovered_additions(output, input) if output.grad_fn is not None else 0
    if additions:
        problems.append(
            f"{additions} addition(s) of two computed tensors in forward (residual connections) that no canonizer "
            "routes through a zennit.layer.Sum module: autograd hands the whole relevance to both summands, so "
            "heatmaps sum to more than the output"
        )
    if not problems:
        return None
    return (
        f"the composite does not cover all of {type(model).__name__}: it has {'; and '.join(problems)}. "
        "Use composite='auto', which merges batch norms and covers the residual adds of the architectures it knows, "
        "or add the canonizers yourself (zennit.canonizers.SequentialMergeBatchNorm or NamedMergeBatchNorm; "
        "zennit.torchvision.ResNetCanonizer; glocal.lrp.canonizers.MobileNetV2Canonizer). "
        + _SILENCE.format(category="CanonizerWarning")
    )
