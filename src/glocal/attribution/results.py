"""Result types of the attribution engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Attribution"]


@dataclass(frozen=True)
class Attribution:
    """Conditional attributions of N samples under M conditions.

    Every per-condition tensor has ``N * M`` rows in **sample-major order**: row ``n * M + m`` belongs to sample ``n``
    under condition ``m``, whatever the conditions contain (see :meth:`row`, :meth:`grid`).

    Attributes
    ----------
    heatmap
        ``(N * M, *spatial)``: the input relevance summed over the channel dimension, or ``None`` if not computed.
    input_relevance
        ``(N * M, *input_shape)``: the raw relevance at the input, or ``None``.
    prediction
        ``(N, ...)``: the model output (or the start layer's activation when the backward pass started there).
    activations
        Layer name to ``(N, ...)`` activation (the module's output; activations do not depend on conditions).
    relevances
        Layer name to ``(N * M, ...)`` relevance *arriving* at the layer's output, i.e. before the layer's own concept
        mask if the layer is conditioned: what ranks the layer's concepts under the other conditions.
    n_samples, n_conditions
        N and M.
    """

    heatmap: torch.Tensor | None
    input_relevance: torch.Tensor | None
    prediction: torch.Tensor
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    relevances: dict[str, torch.Tensor] = field(default_factory=dict)
    n_samples: int = 1
    n_conditions: int = 1

    def row(self, sample: int, condition: int) -> int:
        """Row of sample ``sample`` under condition ``condition`` in the per-condition tensors."""
        if not (0 <= sample < self.n_samples and 0 <= condition < self.n_conditions):
            raise IndexError(
                f"sample {sample} / condition {condition} out of range ({self.n_samples} samples, "
                f"{self.n_conditions} conditions)"
            )
        return sample * self.n_conditions + condition

    def grid(self, tensor: torch.Tensor) -> torch.Tensor:
        """View a per-condition tensor ``(N * M, ...)`` as ``(N, M, ...)``."""
        return tensor.view(self.n_samples, self.n_conditions, *tensor.shape[1:])
