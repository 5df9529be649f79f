"""Finding layers of a model by name.

A *layer* is a submodule, named as in ``model.named_modules()`` (``"features.28"``, ``"layer4.1.conv2"``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import torch

from ..errors import LayerError

__all__ = ["get_layer_names", "resolve_layers"]


def get_layer_names(model: torch.nn.Module, types: Sequence[type] | type) -> list[str]:
    """Names of all submodules of ``model`` that are instances of one of ``types``, in definition order.

    Parameters
    ----------
    model
        The model to search.
    types
        One module class or a sequence of them, e.g. ``[torch.nn.Conv2d, torch.nn.Linear]``.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3))
    >>> get_layer_names(net, [torch.nn.Conv2d])
    ['0', '2']
    """
    wanted = (types,) if isinstance(types, type) else tuple(types)
    return [name for name, module in model.named_modules() if name and isinstance(module, wanted)]


def resolve_layers(model: torch.nn.Module, names: Iterable[str]) -> dict[str, torch.nn.Module]:
    """Map each layer name to its module, or raise :class:`LayerError` that suggests close names.

    Parameters
    ----------
    model
        The model the names refer to.
    names
        Layer names as in ``model.named_modules()``.
    """
    modules = dict(model.named_modules())
    resolved: dict[str, torch.nn.Module] = {}
    for name in names:
        if not isinstance(name, str):
            raise LayerError(
                f"layer names must be strings like 'features.28', got {name!r} of type {type(name).__name__}"
            )
        if name in modules and name != "":
            resolved[name] = modules[name]
            continue
        raise LayerError(unknown_layer_message(name, [key for key in modules if key]))
    return resolved


def unknown_layer_message(name: str, known: Sequence[str]) -> str:
    """The message for an unknown layer name: the close names first, then where to look."""
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"the model has no layer named {name!r}.{hint} Layer names are those of model.named_modules(); "
        f"glocal.get_layer_names(model, [torch.nn.Conv2d, torch.nn.Linear]) lists the usual candidates."
    )
