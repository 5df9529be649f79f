"""Which LRP rules fit a model, and whether they conserve relevance: the ``"auto"`` composite, bias-free rules,
canonizers, the model inspection they rest on, and the conservation check."""

from . import bias_rules, canonizers, composites  # the modules users name: glocal.lrp.composites.auto, ...

__all__ = ["bias_rules", "canonizers", "composites"]
