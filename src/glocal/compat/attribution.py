"""zennit-crp's ``crp.attribution``: :class:`CondAttribution` and :class:`AttributionGraph`, on glocal's engine.

``from crp.attribution import CondAttribution, AttributionGraph`` becomes
``from glocal.compat.attribution import CondAttribution, AttributionGraph``; the result tuples keep zennit-crp's
names (``attrResult``, ``attrGraphResult``). The differences from zennit-crp are listed in
:mod:`glocal.compat.conditional` and :mod:`glocal.compat.graph`.
"""

from .concepts import ChannelConcept, Concept
from .conditional import AttributionResults, CondAttribution, MaskFunction, MaskMap, attrResult
from .graph import AttributionGraph, AttributionGraphResults, attrGraphResult

__all__ = [
    "AttributionGraph",
    "AttributionGraphResults",
    "AttributionResults",
    "ChannelConcept",
    "Concept",
    "CondAttribution",
    "MaskFunction",
    "MaskMap",
    "attrGraphResult",
    "attrResult",
]
