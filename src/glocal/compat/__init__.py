"""zennit-crp's API on glocal's engine: migrate by changing the imports.

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
See :mod:`glocal.compat.attribution` and :mod:`glocal.compat.feature_visualization` for the deliberate differences.
"""

from .attribution import AttributionGraphResults, AttributionResults, CondAttribution, MaskMap, attrResult
from .concepts import ChannelConcept, Concept, MaskFunction
from .conditional import _Translator
from .feature_visualization import FeatureVisualization, import_zennit_crp, vis_img_heatmap
from .graph import AttributionGraph, ModelGraph, attrGraphResult, trace_model_graph
from .helper import abs_norm, get_layer_names, get_output_shapes, max_norm
from .hooks import MaskHook

__all__ = [
    "AttributionGraph",
    "AttributionGraphResults",
    "AttributionResults",
    "ChannelConcept",
    "Concept",
    "CondAttribution",
    "FeatureVisualization",
    "MaskFunction",
    "MaskHook",
    "MaskMap",
    "ModelGraph",
    "abs_norm",
    "attrGraphResult",
    "attrResult",
    "get_layer_names",
    "get_output_shapes",
    "import_zennit_crp",
    "max_norm",
    "trace_model_graph",
    "vis_img_heatmap",
]
_ = _Translator  # re-exported for the parity tests (private)
