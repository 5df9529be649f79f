"""The exceptions and warnings glocal raises.

Every message says what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

__all__ = [
    "CanonizerWarning",
    "ConceptError",
    "ConditionError",
    "ConservationWarning",
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


class CanonizerWarning(GlocalWarning):
    """The model has batch norms that no canonizer merges, or additions in ``forward`` that no canonizer covers."""


class ConservationWarning(GlocalWarning):
    """A call's heatmaps keep much less (or more) relevance than the relevance they started from."""


_PACKAGE = str(Path(__file__).resolve().parent)
_PLUMBING = {contextlib.__file__}


def warn(message: str, category: type[GlocalWarning] = GlocalWarning) -> None:
    """Emit a :class:`GlocalWarning` (or ``category``) attributed to the user's line: the first caller outside glocal
    (and outside the standard library's context-manager plumbing), however deep inside glocal the warning arose."""
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE) or frame.f_code.co_filename in _PLUMBING
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
