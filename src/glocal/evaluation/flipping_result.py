"""The result of :func:`~glocal.evaluation.concept_flipping`: curves per order, their areas and the test against
random orders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError
from .areas import abpc, aopc
from .wilcoxon import WilcoxonResult, wilcoxon_signed_rank

__all__ = ["RANDOM", "FlippingResult"]

RANDOM = "random"
"""The name of the random orders' mean curve."""
OF = ("logit", "probability")


@dataclass(frozen=True)
class FlippingResult:
    """Concept flipping curves of N samples at one layer.

    Attributes
    ----------
    layer, channels
        The layer and its number of channels ``C``.
    switched_off
        ``k_0 = 0 < k_1 < ... < k_S = C``: channels off at each step.
    targets
        The explained output unit of each sample.
    logits, probabilities
        Order name to ``(N, S + 1)`` float64 curves of the target's logit and softmax probability.
    random_logits, random_probabilities
        ``(R, N, S + 1)``: the curves of each random order (``R = 0`` without random orders).
    relevance
        ``(N, C)`` float64 channel relevances for the targets (what MoRF and LeRF sort).
    seed
        Seed of the random orders.
    """

    layer: str
    channels: int
    switched_off: tuple[int, ...]
    targets: tuple[int, ...]
    logits: Mapping[str, torch.Tensor]
    probabilities: Mapping[str, torch.Tensor]
    random_logits: torch.Tensor
    random_probabilities: torch.Tensor
    relevance: torch.Tensor
    seed: int

    @property
    def orders(self) -> tuple[str, ...]:
        """The named orders, then ``"random"`` when there are random orders."""
        return (*self.logits, *((RANDOM,) if self.random_logits.shape[0] else ()))

    def curves(self, order: str, of: str = "logit") -> torch.Tensor:
        """``(N, S + 1)`` curves of ``order`` (``"random"``: the mean over the random orders)."""
        if of not in OF:
            raise InputError(f"of must be one of {OF}, got {of!r}")
        if order == RANDOM and order in self.orders:
            return (self.random_logits if of == "logit" else self.random_probabilities).mean(0)
        named = self.logits if of == "logit" else self.probabilities
        if order not in named:
            raise InputError(f"order {order!r} was not computed; this result has {self.orders}")
        return named[order]

    def spread(self, of: str = "logit") -> torch.Tensor:
        """``(N, S + 1)`` standard deviation over the random orders (population form; zeros with one order)."""
        if RANDOM not in self.orders:
            raise InputError("this result has no random orders; run concept_flipping with random_orders >= 1")
        curves = self.random_logits if of == "logit" else self.random_probabilities
        return curves.std(0, unbiased=False)

    def aopc_per_sample(self, order: str = "morf", of: str = "logit") -> torch.Tensor:
        """``(N,)`` AOPC of each sample: ``(1 / (S + 1)) * sum_s (f(x) - f(x_{k_s}))`` (for ``"random"``, the mean
        over the random orders' AOPCs, which is the AOPC of their mean curve)."""
        return aopc(self.curves(order, of))

    def aopc(self, order: str = "morf", of: str = "logit") -> float:
        """AOPC of ``order``, the mean over samples; larger: the output falls sooner in this order."""
        return float(self.aopc_per_sample(order, of).mean())

    def abpc(self, of: str = "logit") -> float:
        """ABPC, the mean over samples of ``(1 / (S + 1)) * sum_s (f_LeRF(k_s) - f_MoRF(k_s))``."""
        return float(abpc(self.curves("lerf", of), self.curves("morf", of)).mean())

    def wilcoxon(self, order: str = "morf", of: str = "logit", alternative: str = "greater") -> WilcoxonResult:
        """Paired Wilcoxon signed-rank test over samples of ``order``'s AOPC against the random orders' mean AOPC.

        ``alternative="greater"`` (the default) asks whether removing concepts in ``order`` lowers the output more
        than removing them at random: a small p-value says it does.
        """
        if RANDOM not in self.orders:
            raise InputError("the test compares with random orders; run concept_flipping with random_orders >= 1")
        return wilcoxon_signed_rank(
            self.aopc_per_sample(order, of), self.aopc_per_sample(RANDOM, of), alternative=alternative
        )

    def table(self, of: str = "logit") -> str:
        """AOPC per order (and ABPC) as a small Markdown table."""
        lines = [f"| order | AOPC ({of}) |", "| --- | --- |"]
        lines += [f"| {order} | {self.aopc(order, of):.4g} |" for order in self.orders]
        if "morf" in self.logits and "lerf" in self.logits:
            lines.append(f"| ABPC (LeRF - MoRF) | {self.abpc(of):.4g} |")
        return "\n".join(lines)

    def summary(self) -> str:
        """One paragraph: the layer, the AOPCs, ABPC and the test of MoRF against random."""
        n = len(self.targets)
        text = (
            f"concept flipping at {self.layer!r} ({self.channels} channels, {len(self.switched_off) - 1} steps, "
            f"{n} samples): AOPC on the logit " + ", ".join(f"{order} {self.aopc(order):.4g}" for order in self.orders)
        )
        if "morf" in self.logits and "lerf" in self.logits:
            text += f"; ABPC {self.abpc():.4g}"
        if "morf" in self.logits and RANDOM in self.orders:
            text += f"; MoRF > random: {self.wilcoxon()}"
        return text

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: every curve as lists, and the AOPCs."""
        return {
            "layer": self.layer,
            "channels": self.channels,
            "switched_off": list(self.switched_off),
            "targets": list(self.targets),
            "seed": self.seed,
            "logits": {name: curve.tolist() for name, curve in self.logits.items()},
            "probabilities": {name: curve.tolist() for name, curve in self.probabilities.items()},
            "random_logits": self.random_logits.tolist(),
            "random_probabilities": self.random_probabilities.tolist(),
            "relevance": self.relevance.tolist(),
            "aopc": {order: {of: self.aopc(order, of) for of in OF} for order in self.orders},
        }

    def figure(self, of: str = "logit", ax: Any = None) -> Any:
        """The mean curves per order against the fraction of channels off, random as mean ± one standard deviation
        band (:func:`glocal.viz.evaluation.flipping_figure`; needs matplotlib)."""
        from ..viz.evaluation import flipping_figure

        return flipping_figure(self, of=of, ax=ax)
