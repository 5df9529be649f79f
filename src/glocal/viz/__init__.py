"""Every drawing: heatmap images, concept figures, graph, path, part graph and atlas figures, reference grids.

Needs matplotlib (``pip install "glocal[viz]"``) for figures; nothing below this package imports it at module level."""

from .atlas import atlas_figure, atlas_thumbnails
from .concepts import concept_figure, save_concept_figures
from .graphs import graph_figure, path_figure
from .images import heatmap_image
from .parts import part_graph_figure, part_positions_figure
from .references import reference_grid

__all__ = [
    "atlas_figure",
    "atlas_thumbnails",
    "concept_figure",
    "graph_figure",
    "heatmap_image",
    "part_graph_figure",
    "part_positions_figure",
    "path_figure",
    "reference_grid",
    "save_concept_figures",
]
