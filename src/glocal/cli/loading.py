"""Models, data and composites from command-line strings (imported only when a command runs: it imports torch).

A model is a preset name (``mobilenet_v2``, ``mnist_cnn``) or ``package.module:factory``, a callable returning a
``torch.nn.Module``, with optional weights that are read with ``torch.load(..., weights_only=True)`` (tensors only:
nothing is unpickled). Data is image files, an image folder (flat, or one subfolder per class), a
``package.module:dataset_factory`` or, for a preset that ships one, ``preset``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from ..errors import GlocalError
from ..presets import PRESETS, preset
from ..presets.images import IMAGE_SUFFIXES, load_pictures

__all__ = [
    "FolderDataset",
    "Loaded",
    "check_layers",
    "image_paths",
    "import_object",
    "load",
    "load_data",
    "make_composite",
]

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Loaded:
    """A model with everything a command needs to feed and show it.

    Attributes
    ----------
    name
        The ``--model`` string.
    model
        The model, in eval mode.
    transform
        Pictures ``(N, C, size, size)`` in [0, 1] to model inputs.
    picture
        Model inputs back to pictures in [0, 1] (``None``: each image scaled to its own range).
    size, channels, zoom
        The pictures the model takes, and how photos are cut to them.
    class_names
        Names of the outputs, or ``None``.
    layers
        Default layers to explain (a preset's), or ``()``.
    dataset
        The preset's shipped dataset factory, or ``None``.
    """

    name: str
    model: torch.nn.Module
    transform: Transform
    picture: Transform | None
    size: int
    channels: int
    zoom: float
    class_names: list[str] | None
    layers: tuple[str, ...]
    dataset: Callable[[], Any] | None


def import_object(spec: str, option: str) -> Any:
    """The object named by ``package.module:name`` (the working directory is importable, as for ``python -m``)."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise click.BadParameter(
            f"expected package.module:name (e.g. mypackage.models:make_model), got {spec!r}", param_hint=option
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise click.BadParameter(
            f"cannot import {module_name!r} ({error}); is it installed, or in the working directory?",
            param_hint=option,
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise click.BadParameter(f"module {module_name!r} has no {attribute!r}", param_hint=option)
        target = getattr(target, part)
    return target


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise click.BadParameter(f"no file at {path}", param_hint="--weights") from None
    except Exception as error:  # weights_only refuses arbitrary pickles with an UnpicklingError
        raise click.BadParameter(
            f"{path} is not a state dict that torch.load(..., weights_only=True) can read ({error}); save the "
            "weights with torch.save(model.state_dict(), path)",
            param_hint="--weights",
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise click.BadParameter(
            f"{path} holds a {type(state).__name__}, not a state dict (names to tensors) or a dict with one under "
            "'state_dict'",
            param_hint="--weights",
        )
    return state


def _identity(pictures: torch.Tensor) -> torch.Tensor:
    return pictures


def load(
    model: str,
    *,
    weights: Path | None = None,
    transform: str | None = None,
    size: int | None = None,
    channels: int | None = None,
) -> Loaded:
    """The model named by ``--model`` with its weights and preprocessing."""
    if ":" not in model:
        if model not in PRESETS:
            raise click.BadParameter(
                f"{model!r} is neither a preset ({', '.join(PRESETS)}) nor package.module:factory", param_hint="--model"
            )
        for option, value in (("--weights", weights), ("--transform", transform), ("--size", size)):
            if value is not None:
                raise click.BadParameter(f"the preset {model} brings its own; leave {option} out", param_hint=option)
        chosen = preset(model)
        return Loaded(
            name=model,
            model=chosen.load_model(),
            transform=chosen.normalise,
            picture=chosen.picture,
            size=chosen.size,
            channels=chosen.channels,
            zoom=chosen.zoom,
            class_names=chosen.class_names(),
            layers=chosen.layers,
            dataset=chosen.dataset,
        )
    factory = import_object(model, "--model")
    if not callable(factory):
        raise click.BadParameter(f"{model} is a {type(factory).__name__}, not a callable", param_hint="--model")
    network = factory()
    if not isinstance(network, torch.nn.Module):
        raise click.BadParameter(
            f"{model}() returned a {type(network).__name__}, not a torch.nn.Module", param_hint="--model"
        )
    if weights is not None:
        try:
            network.load_state_dict(_read_weights(weights))
        except RuntimeError as error:
            raise click.BadParameter(
                f"the weights in {weights} do not fit {model}(): {error}", param_hint="--weights"
            ) from None
    function = _identity if transform is None else import_object(transform, "--transform")
    if not callable(function):
        raise click.BadParameter(f"{transform} is not a callable", param_hint="--transform")
    return Loaded(
        name=model,
        model=network.eval(),
        transform=function,
        picture=None,
        size=224 if size is None else size,
        channels=3 if channels is None else channels,
        zoom=1.0,
        class_names=None,
        layers=(),
        dataset=None,
    )


def check_layers(loaded: Loaded, layers: Sequence[str], option: str = "--layer") -> list[str]:
    """``layers`` (or the preset's defaults when none are given), each checked against the model's modules."""
    chosen = list(layers) or list(loaded.layers)
    if not chosen:
        raise click.BadParameter("name at least one layer (e.g. --layer features.14)", param_hint=option)
    names = {name for name, _ in loaded.model.named_modules() if name}
    for layer in chosen:
        if layer not in names:
            close = [name for name in sorted(names) if layer in name or name in layer][:8]
            hint = f"; close: {', '.join(close)}" if close else f"; its layers include {', '.join(sorted(names)[:8])}"
            raise click.BadParameter(f"the model has no layer {layer!r}{hint}", param_hint=option)
    return chosen


def image_paths(sources: Sequence[Path]) -> list[Path]:
    """Image files, and the image files of folders (sorted), in the order given."""
    paths: list[Path] = []
    for source in sources:
        if source.is_dir():
            found = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise click.BadParameter(f"the folder {source} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
        elif source.is_file():
            paths.append(source)
        else:
            raise click.BadParameter(f"no file or folder at {source}")
    return paths


class FolderDataset(torch.utils.data.Dataset[Any]):
    """The images of a folder as model inputs: flat (items are inputs) or one subfolder per class (items are
    ``(input, label)``, labels numbered by the sorted subfolder names)."""

    def __init__(self, folder: Path, loaded: Loaded) -> None:
        self.loaded = loaded
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.classes = classes
        if classes:
            self.items: list[tuple[Path, int | None]] = [
                (path, label) for label, name in enumerate(classes) for path in image_paths([folder / name])
            ]
        else:
            self.items = [(path, None) for path in image_paths([folder])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, number: int) -> Any:
        path, label = self.items[number]
        pictures = load_pictures([path], self.loaded.size, self.loaded.channels, self.loaded.zoom)
        inputs = self.loaded.transform(pictures)[0]
        return inputs if label is None else (inputs, label)


def load_data(data: str, loaded: Loaded) -> Any:
    """The dataset named by ``--data``: ``preset``, an image folder, or ``package.module:dataset_factory``."""
    if data == "preset":
        if loaded.dataset is None:
            raise click.BadParameter(f"the model {loaded.name} ships no dataset; give a folder", param_hint="--data")
        return loaded.dataset()
    path = Path(data)
    if path.is_dir():
        return FolderDataset(path, loaded)
    if ":" in data and not path.exists():
        factory = import_object(data, "--data")
        make = callable(factory) and (inspect.isclass(factory) or not hasattr(factory, "__getitem__"))
        dataset = factory() if make else factory
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise click.BadParameter(
                f"{data} gave a {type(dataset).__name__}, not a map-style dataset", param_hint="--data"
            )
        return dataset
    raise click.BadParameter(
        f"{data!r} is not an image folder, package.module:dataset_factory or 'preset'", param_hint="--data"
    )


def _bounds(loaded: Loaded) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """The model inputs of black and white pictures, per channel ``(1, C, 1, 1)``, for the box rule."""
    try:
        shape = (1, loaded.channels, loaded.size, loaded.size)
        low, high = loaded.transform(torch.zeros(shape)), loaded.transform(torch.ones(shape))
    except Exception:
        return None, None
    if low.dim() != 4 or low.shape[1] != loaded.channels:
        return None, None
    return low.amin((2, 3), keepdim=True), high.amax((2, 3), keepdim=True)


def _named(name: str, modules: Sequence[Any], option: str) -> Any:
    for module in modules:
        found = getattr(module, name, None)
        if inspect.isclass(found):
            return found
    raise click.BadParameter(f"no {option.lstrip('-')} called {name!r}", param_hint=option)


def make_composite(loaded: Loaded, name: str, canonizers: Sequence[str] = ()) -> tuple[Any, str]:
    """The composite ``--composite name`` (``auto``, or a zennit composite class such as ``EpsilonPlus``) with the
    ``--canonizer`` classes, and a description of what was chosen."""
    import zennit.canonizers
    import zennit.composites
    import zennit.core
    import zennit.torchvision

    from ..lrp import canonizers as glocal_canonizers
    from ..lrp.composites import auto

    low, high = _bounds(loaded)
    if name == "auto":
        if canonizers:
            raise click.BadParameter(
                "--composite auto brings its own canonizers; name a composite", param_hint="--canonizer"
            )
        choice = auto(loaded.model, low=low, high=high)
        return choice.composite, f"auto: {choice.architecture} ({choice.reason})"
    by_snake = getattr(zennit.composites, "COMPOSITES", {})
    cls = by_snake.get(name) or getattr(zennit.composites, name, None)
    if not inspect.isclass(cls) or not issubclass(cls, zennit.core.Composite):
        known = sorted(c.__name__ for c in by_snake.values())
        raise click.BadParameter(
            f"no zennit composite {name!r}; try auto or {', '.join(known)}", param_hint="--composite"
        )
    made = [_named(c, (zennit.canonizers, zennit.torchvision, glocal_canonizers), "--canonizer")() for c in canonizers]
    arguments: dict[str, Any] = {"canonizers": made}
    if "low" in inspect.signature(cls).parameters:
        if low is None:
            raise GlocalError(f"{cls.__name__} needs the input bounds, but --transform did not map pictures to them")
        arguments.update(low=low, high=high)
    return cls(**arguments), cls.__name__ + "".join(f" + {c}" for c in canonizers)
