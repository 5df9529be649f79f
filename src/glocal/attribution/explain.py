"""One-call explanations: the most relevant concepts of a layer, with their heatmaps and relevance shares.

In the spirit of grad-cam: the model and composite go to the constructor, the data to the call.

>>> import torch
>>> from zennit.composites import EpsilonPlus
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3))
>>> explainer = ConceptExplainer(net, EpsilonPlus())
>>> explanation = explainer(torch.rand(2, 1, 6, 6), layer="0", select=2)
>>> explanation.concept_heatmaps.shape   # (samples, concepts, H, W)
torch.Size([2, 2, 6, 6])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import zennit.core

from .concepts import Concept, relevance_shares
from .conditions import Condition, PerSample
from .engine import Attributor
from .selectors import Selector, TopK
from .targets import Target, resolve_targets

__all__ = ["ConceptExplainer", "ConceptExplanation", "Target"]


@dataclass(frozen=True)
class ConceptExplanation:
    """The concepts of one layer that matter most for each sample's target.

    Attributes
    ----------
    layer
        The layer the concepts belong to.
    prediction
        ``(N, outputs)`` model output.
    targets
        ``(N,)`` the output unit explained for each sample.
    heatmap
        ``(N, H, W)`` the plain (unconditional) heatmap of each sample's target.
    concept_relevance
        ``(N, C)`` relevance of every concept of the layer.
    shares
        ``(N, C)`` relevance shares of every concept (see :func:`~glocal.relevance_shares`).
    concept_ids
        Per sample, the selected concept ids, most relevant first.
    concept_shares
        ``(N, K)`` shares of the selected concepts (0 where a sample has fewer than K).
    concept_heatmaps
        ``(N, K, H, W)`` conditional heatmap of each selected concept (zeros where a sample has fewer than K).
    """

    layer: str
    prediction: torch.Tensor
    targets: torch.Tensor
    heatmap: torch.Tensor
    concept_relevance: torch.Tensor
    shares: torch.Tensor
    concept_ids: list[list[int]]
    concept_shares: torch.Tensor
    concept_heatmaps: torch.Tensor


class ConceptExplainer:
    """The top concepts of a layer for each sample, with conditional heatmaps and relevance shares, in one call.

    Parameters
    ----------
    model
        The model to explain (left unchanged).
    composite
        zennit composite with the LRP rules and canonizers, or ``"auto"`` (see :func:`glocal.lrp.composites.auto`).
    concepts
        Concept type per layer (default: channels), as for :class:`~glocal.Attributor`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        composite: zennit.core.Composite | str | None = None,
        *,
        concepts: Concept | Mapping[str, Concept] | None = None,
    ) -> None:
        self.attributor = Attributor(model, composite, concepts=concepts)

    def __call__(
        self,
        data: torch.Tensor,
        layer: str,
        *,
        target: Target = None,
        select: Selector | int = 8,
        normalization: str = "abs",
        region: torch.Tensor | None = None,
    ) -> ConceptExplanation:
        """Explain ``data`` ``(N, ...)`` through the concepts of ``layer``.

        Parameters
        ----------
        target
            Output unit per sample: ``None`` for the predicted class, an int for all samples, or one per sample.
        select
            A :mod:`~glocal.attribution.selectors` selector, or an int k for the top-k concepts.
        normalization
            How shares are normalised: ``"abs"`` (paper) or ``"signed"``.
        region
            Optional input region (``(H, W)`` or ``(N, H, W)`` weights): rank and share concepts by the relevance they
            put *inside* the region ("which concepts respond here"), see :meth:`~glocal.Run.region_relevance`.
        """
        selector = TopK(select) if isinstance(select, int) else select
        with self.attributor.session(data, record=[layer]) as run:
            targets = resolve_targets(target, run.output.detach())
            target_ids = PerSample([[t] for t in targets])
            plain = run.attribute(Condition(targets=target_ids))
            concept = self.attributor.concept(layer)
            if region is None:
                concept_relevance = concept.relevance(plain.relevances[layer])
            else:
                concept_relevance = concept.relevance(
                    run.region_relevance(layer, region, Condition(targets=target_ids))
                )
            shares = relevance_shares(concept_relevance, normalization)
            ids = selector.select(concept_relevance)
            width = max((len(i) for i in ids), default=0)
            conditions = [
                Condition(targets=target_ids, layers={layer: PerSample([i[j : j + 1] for i in ids])})
                for j in range(width)
            ]
            conditional = run.attribute(conditions) if conditions else None
        n = data.shape[0]
        assert plain.heatmap is not None
        if conditional is not None and conditional.heatmap is not None:
            concept_heatmaps = conditional.grid(conditional.heatmap)
        else:
            concept_heatmaps = plain.heatmap.new_zeros(n, 0, *plain.heatmap.shape[1:])
        concept_shares = shares.new_zeros(n, width)
        for row, sample_ids in enumerate(ids):
            concept_shares[row, : len(sample_ids)] = shares[row, sample_ids]
        return ConceptExplanation(
            layer=layer,
            prediction=plain.prediction,
            targets=torch.tensor(targets),
            heatmap=plain.heatmap,
            concept_relevance=concept_relevance,
            shares=shares,
            concept_ids=ids,
            concept_shares=concept_shares,
            concept_heatmaps=concept_heatmaps,
        )
