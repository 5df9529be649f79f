"""The drawings' former module, kept only while :mod:`glocal.viz` still imports from it.

Concept figures now live in :mod:`glocal.viz.concepts`, graph and path figures in :mod:`glocal.viz.graphs`.
"""

from .concepts import concept_figure, figure_size, save_concept_figures
from .graphs import GRAPH_MAX_WIDTH, graph_figure, path_figure
from .images import heatmap_image

__all__ = [
    "GRAPH_MAX_WIDTH",
    "concept_figure",
    "figure_size",
    "graph_figure",
    "heatmap_image",
    "path_figure",
    "save_concept_figures",
]
