"""zennit-crp's API on glocal's engine: migrate by changing the imports.

``glocal.compat`` has zennit-crp's module layout (``crp.attribution`` becomes ``glocal.compat.attribution``, and so
on for ``concepts``, ``helper``, ``hooks``, ``graph``, ``visualization``, ``maximization``, ``statistics``, ``cache``
and ``image``); every name is also importable from ``glocal.compat`` itself:

======================================================  ======================================================
zennit-crp                                              glocal
======================================================  ======================================================
``from crp.attribution import CondAttribution``         ``from glocal.compat import CondAttribution``
``from crp.concepts import ChannelConcept``             ``from glocal.compat import ChannelConcept``
``from crp.helper import get_layer_names``              ``from glocal.compat import get_layer_names``
``from crp.visualization import FeatureVisualization``  ``from glocal.compat import FeatureVisualization``
``from crp.image import vis_img_heatmap``               ``from glocal.compat import vis_img_heatmap``
``from crp.attribution import AttributionGraph``        ``from glocal.compat import AttributionGraph``
``from crp.graph import trace_model_graph``             ``from glocal.compat import trace_model_graph``
======================================================  ======================================================

:func:`import_zennit_crp` turns the output folder of zennit-crp's ``FeatureVisualization.run`` into a glocal index.
The deliberate differences, and why, are listed in the project's ``docs/migration.md`` (and in
:mod:`glocal.compat.conditional`, :mod:`glocal.compat.graph` and :mod:`glocal.compat.feature_visualization`).
"""

from .attribution import AttributionGraphResults, AttributionResults, CondAttribution, MaskMap, attrResult
from .cache import Cache, ImageCache
from .concepts import ChannelConcept, Concept, MaskFunction
from .feature_visualization import FeatureVisualization, import_zennit_crp
from .graph import AttributionGraph, ModelGraph, attrGraphResult, trace_model_graph
from .helper import abs_norm, find_files, get_layer_names, get_output_shapes, load_receptive_field, max_norm
from .hooks import MaskHook
from .image import get_crop_range, imgify, plot_grid, vis_img_heatmap, vis_opaque_img
from .maximization import Maximization, load_maximization
from .statistics import Statistics, load_stat_targets, load_statistics

__all__ = [
    "AttributionGraph",
    "AttributionGraphResults",
    "AttributionResults",
    "Cache",
    "ChannelConcept",
    "Concept",
    "CondAttribution",
    "FeatureVisualization",
    "ImageCache",
    "MaskFunction",
    "MaskHook",
    "MaskMap",
    "Maximization",
    "ModelGraph",
    "Statistics",
    "abs_norm",
    "attrGraphResult",
    "attrResult",
    "find_files",
    "get_crop_range",
    "get_layer_names",
    "get_output_shapes",
    "imgify",
    "import_zennit_crp",
    "load_maximization",
    "load_receptive_field",
    "load_stat_targets",
    "load_statistics",
    "max_norm",
    "plot_grid",
    "trace_model_graph",
    "vis_img_heatmap",
    "vis_opaque_img",
]
