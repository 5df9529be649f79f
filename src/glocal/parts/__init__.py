"""Explanatory graphs of object parts (issue 13, in progress): so far the location-instability metric of Zhang et al.
that the part graphs will be measured with (:mod:`glocal.parts.instability`)."""

from .instability import TOP_IMAGES, LayerInstability, layer_instability, model_instability, unit_instability

__all__ = ["TOP_IMAGES", "LayerInstability", "layer_instability", "model_instability", "unit_instability"]
