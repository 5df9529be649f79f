"""Explanatory graphs of object parts (Zhang et al.'s explanatory graph, built from CRP instead of EM): part nodes that
group channels finding the same place across images, edges of conditional relevance flow, and the location-instability
metric they are measured with."""

from .build import part_graph
from .graph import PartEdge, PartGraph, PartNode
from .instability import TOP_IMAGES, LayerInstability, layer_instability, model_instability, unit_instability
from .locate import PartLocations, locate_groups, locate_parts
from .receptive import ReceptiveField, channel_positions, receptive_field

__all__ = [
    "TOP_IMAGES",
    "LayerInstability",
    "PartEdge",
    "PartGraph",
    "PartLocations",
    "PartNode",
    "ReceptiveField",
    "channel_positions",
    "layer_instability",
    "locate_groups",
    "locate_parts",
    "model_instability",
    "part_graph",
    "receptive_field",
    "unit_instability",
]
