"""The demo's model-wide analyses for the report: what the concepts are worth (pruning curves of every criterion on
the MNIST CNN), whether the relevances are faithful (concept flipping on the photos and on digits) and whether the
relevance adds up (the diagnosis of each model under the demo's composite)."""

from __future__ import annotations

import logging

import torch

from ..evaluation import concept_flipping, diagnose
from ..pruning import compare_criteria
from ..report.analyses import diagnosis_analysis, flipping_analysis, pruning_analysis
from ..report.data import Analysis
from .mnist import MnistDemo
from .mobilenet import MobilenetDemo

__all__ = ["mnist_analyses", "mobilenet_analyses"]

logger = logging.getLogger(__name__)


def mobilenet_analyses(
    demo: MobilenetDemo, *, crops: int = 16, steps: int = 16, random_orders: int = 5
) -> list[Analysis]:
    """Concept flipping at the demo's layer on ``crops`` photo crops spread over the demo's crops (real photo regions;
    no labels needed: the predictions are explained), and the diagnosis of MobileNetV2 under the demo's composite on
    the demo's photos."""
    n = len(demo.dataset)
    regions = torch.stack([demo.dataset[i] for i in range(0, n, max(1, n // crops))][:crops])
    flipping = concept_flipping(
        demo.attributor, regions, demo.layer, steps=steps, random_orders=random_orders, progress=False
    )
    logger.info("MobileNetV2 %s", flipping.summary())
    diagnosis = diagnose(demo.attributor.model, demo.attributor.composite, demo.inputs, progress=False)
    logger.info("MobileNetV2 under the demo's composite: the heatmaps keep %.4f of the logits", diagnosis.kept)
    return [flipping_analysis([flipping]), diagnosis_analysis(diagnosis)]


def mnist_analyses(demo: MnistDemo, *, quick: bool = False) -> list[Analysis]:
    """Pruning curves of every criterion over the indexed layers (scores from every 10th digit, accuracy on another
    tenth of them), concept flipping of 50 digits at the last layer, and the diagnosis on 32 digits."""
    n = len(demo.dataset)
    step = max(2, n // 500)  # 500 reference and 500 evaluation digits of the 5000 (fewer with --quick)
    reference = torch.utils.data.Subset(demo.dataset, list(range(0, n, step)))
    evaluation = torch.utils.data.Subset(demo.dataset, list(range(step // 2, n, step)))
    rates = (0.0, 0.2, 0.4, 0.6, 0.8) if quick else tuple(r / 10 for r in range(10))
    comparison = compare_criteria(
        demo.model, evaluation, list(demo.layers), reference=reference, rates=rates, progress=False
    )
    logger.info("MNIST pruning without fine-tuning, area under accuracy against rate:\n%s", comparison.table())
    digits = torch.stack([demo.dataset[i][0] for i in range(0, n, max(1, n // 50))])
    flipping = concept_flipping(demo.attributor, digits, demo.layers[-1], steps=16, progress=False)
    logger.info("MNIST %s", flipping.summary())
    diagnosis = diagnose(demo.model, demo.attributor.composite, digits[:32], progress=False)
    return [
        pruning_analysis(comparison, layers=demo.layers),
        flipping_analysis([flipping]),
        diagnosis_analysis(diagnosis),
    ]
