"""zennit-crp's ``crp.visualization``: ``from glocal.compat.visualization import FeatureVisualization``.

The class lives in :mod:`glocal.compat.feature_visualization` (with the list of deliberate differences); the other
names zennit-crp's module made importable from here are re-exported as well.
"""

from __future__ import annotations

from .cache import Cache
from .feature_visualization import FeatureVisualization
from .image import vis_img_heatmap, vis_opaque_img
from .maximization import Maximization, load_maximization
from .statistics import Statistics, load_stat_targets, load_statistics

__all__ = [
    "Cache",
    "FeatureVisualization",
    "Maximization",
    "Statistics",
    "load_maximization",
    "load_stat_targets",
    "load_statistics",
    "vis_img_heatmap",
    "vis_opaque_img",
]
