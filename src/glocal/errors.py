"""The exceptions and warnings glocal raises.

Every message says what was expected, what came, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConceptError",
    "ConditionError",
    "GlocalError",
    "GlocalWarning",
    "GradientDisabledError",
    "InputError",
    "LayerError",
    "TargetError",
]


class GlocalError(Exception):
    """Base class of every error glocal raises on purpose."""


class LayerError(GlocalError, KeyError):
    """A layer name that the model does not have, or a layer that cannot be used as asked."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class ConceptError(GlocalError, IndexError):
    """A concept id outside the layer's concepts, or a concept definition that does not fit the layer."""


class TargetError(GlocalError, IndexError):
    """A target (output unit) outside the model's output, or a target list of the wrong length."""


class InputError(GlocalError, ValueError):
    """Input data of the wrong type, shape or dtype."""


class ConditionError(GlocalError, ValueError):
    """Conditions that are malformed or cannot be met by the model's structure."""


class GradientDisabledError(GlocalError, RuntimeError):
    """Relevance propagation needs autograd, but gradients are disabled (``torch.no_grad`` or inference mode)."""


class GlocalWarning(UserWarning):
    """Something glocal did on the user's behalf, or a setting that may give surprising results."""
