"""Fingerprints of what produced an index: the model, the composite (rules and canonizers) and the dataset.

A fingerprint is a small JSON-serialisable dict. Two indexes made from equal fingerprints are interchangeable;
:func:`differences` explains in words why two fingerprints differ.

Datasets get two fingerprints. :func:`dataset_fingerprint` hashes the length and 16 evenly spaced samples: cheap, it
is part of an index's manifest and rejects a different dataset before any work. The exact one covers every sample and
costs no extra pass: the scan hashes each sample as it loads it (:func:`sample_digest`), each fixed batch ``b`` of
consecutive samples gets :func:`batch_digest`, and :func:`combine_digests` hashes the batch digests in batch order.
Batches are the same wherever and whenever they are scanned, so the result does not depend on how a distributed run
split the batches or where a resumed run continued. The index keeps the batch digests; a resumed scan re-hashes the
batches it had done, and a reader given the dataset re-hashes all (:func:`batch_digests`), each naming the samples
that changed.

zennit rules keep their parameters (epsilon, gamma, low/high, ...) in closures, so a rule is fingerprinted by what
it computes: a copy is registered on small fixed probe layers, relevance is propagated through them once, and the
resulting input relevance (rounded to 6 significant digits, so that platforms agree) is hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .._former import former_module
from ..progress import progress_bar

__all__ = [
    "DIGEST_BYTES",
    "batch_digest",
    "batch_digests",
    "combine_digests",
    "composite_fingerprint",
    "dataset_fingerprint",
    "differences",
    "digest_changes",
    "model_fingerprint",
    "sample_digest",
    "stable_name",
]

_SAMPLES = 16
_DIGITS = 6

# rule object -> behaviour hash; weak keys, so fingerprinting keeps no rule alive
_rule_hashes: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def stable_name(obj: Any) -> str:
    """``module.qualname`` of a class or function (of an instance: its class), glocal's own named by their 0.1
    module paths (:func:`glocal._former.former_module`), so that a fingerprint does not change when code moves."""
    named = obj if isinstance(obj, type) or inspect.isroutine(obj) else type(obj)
    return f"{former_module(named.__module__)}.{named.__qualname__}"


def _update_tensor(digest: Any, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bits
        tensor = tensor.view(torch.int16)
    digest.update(tensor.numpy().data.cast("B"))  # the bytes in place, without a copy


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """The class, parameter count and a sha256 over every parameter and buffer of ``model``.

    The hash covers names, dtypes, shapes and bytes in ``state_dict`` order, so any changed weight (or running
    statistic) changes it.

    Returns
    -------
    dict
        ``{"class": str, "parameters": int, "sha256": str}``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model_fingerprint expects a torch.nn.Module, got {type(model).__name__}")
    digest = hashlib.sha256()
    for name, value in model.state_dict(keep_vars=False).items():
        digest.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            _update_tensor(digest, value)
        else:  # extra state
            digest.update(repr(value).encode())
    return {
        "class": stable_name(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "sha256": digest.hexdigest(),
    }


def _round(tensor: torch.Tensor) -> np.ndarray:
    """``tensor`` rounded to ``_DIGITS`` significant digits, as float64, with -0.0 made 0.0."""
    values = tensor.detach().double().cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.where(values == 0, 0, np.floor(np.log10(np.abs(values))))
    magnitude = np.nan_to_num(magnitude, nan=0.0, posinf=0.0, neginf=0.0)
    scale = 10.0 ** (_DIGITS - 1 - magnitude)
    rounded = np.round(values * scale) / scale
    return rounded + 0.0


def _probes() -> list[tuple[torch.nn.Module, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(5, 4)
    conv = torch.nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        for module in (linear, conv):
            for parameter in module.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return [
        (linear, torch.randn(3, 5, generator=generator, dtype=torch.float32)),
        (conv, torch.randn(2, 2, 5, 5, generator=generator, dtype=torch.float32)),
    ]


def _behaviour_hash(rule: Any) -> str:
    """A sha256 of the input relevance that a copy of ``rule`` computes on fixed probe layers."""
    try:
        return _rule_hashes[rule]
    except (KeyError, TypeError):
        pass
    digest = hashlib.sha256(stable_name(rule).encode())
    with torch.enable_grad():
        # the small-input variant makes stabilisers (epsilon) visible even when they are tiny
        for probe, data in [(p, d * scale) for p, d in _probes() for scale in (1.0, 1e-4)]:
            hook = rule.copy()
            handle = hook.register(probe)
            try:
                data = data.clone().requires_grad_(True)
                output = probe(data)
                relevance = torch.linspace(-1.0, 2.0, output.numel()).reshape(output.shape)
                (gradient,) = torch.autograd.grad(output, data, relevance)
                digest.update(_round(gradient).tobytes())
            except Exception as error:  # a rule that does not apply to this probe: its failure is its behaviour
                digest.update(f"error:{type(error).__name__}".encode())
            finally:
                handle.remove()
    result = digest.hexdigest()
    with contextlib.suppress(TypeError):  # not weak-referenceable: do not cache
        _rule_hashes[rule] = result
    return result


def composite_fingerprint(composite: Any, model: torch.nn.Module) -> dict[str, Any]:
    """The composite's class, its canonizers and, per module of ``model``, the rule and its behaviour hash.

    Works for zennit 0.4.6 and 0.5.x composites: ``composite.module_map(ctx, name, module)`` gives each module's
    rule template (``None`` for modules without a rule).

    Parameters
    ----------
    composite
        A :class:`zennit.core.Composite`, or ``None`` for plain gradients.
    model
        The model the composite will be registered to (not modified).

    Returns
    -------
    dict
        ``{"class": str, "canonizers": [str, ...], "rules": {module name: {"rule": str, "behaviour": str}}}``;
        the root module is named ``"<root>"``.
    """
    if composite is None:  # plain gradients, as Attributor(model, None) computes them
        return {"class": None, "canonizers": [], "rules": {}}
    module_map = getattr(composite, "module_map", None)
    if not callable(module_map):
        raise TypeError(
            f"composite_fingerprint expects a zennit Composite (with module_map), got {type(composite).__name__}"
        )
    ctx: dict[Any, Any] = {}
    rules: dict[str, dict[str, str]] = {}
    for name, module in model.named_modules():
        template = module_map(ctx, name, module)
        if template is not None:
            rules[name or "<root>"] = {"rule": stable_name(template), "behaviour": _behaviour_hash(template)}
    return {
        "class": stable_name(composite),
        "canonizers": [stable_name(canonizer) for canonizer in (getattr(composite, "canonizers", None) or [])],
        "rules": rules,
    }


def _update_sample(digest: Any, value: Any) -> None:
    """Hash a sample: tensors, arrays, PIL images, numbers, strings, bytes and nested tuples/lists/dicts."""
    if isinstance(value, torch.Tensor):
        digest.update(b"T")
        _update_tensor(digest, value)
    elif isinstance(value, np.ndarray | np.generic):
        array = np.ascontiguousarray(value)
        digest.update(f"A{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _update_sample(digest, value[key])
    elif isinstance(value, tuple | list):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _update_sample(digest, item)
    elif isinstance(value, bool | int | float | complex | str | None):
        digest.update(f"S{type(value).__name__}:{value!r}".encode())
    elif isinstance(value, bytes):
        digest.update(b"B" + value)
    elif hasattr(value, "tobytes") and hasattr(value, "mode") and hasattr(value, "size"):  # PIL image
        digest.update(f"I{value.mode}{tuple(value.size)}".encode())
        digest.update(value.tobytes())
    else:
        raise TypeError(
            f"dataset_fingerprint cannot hash a sample part of type {type(value).__name__}; samples must consist "
            "of tensors, numpy arrays, PIL images, numbers, strings and tuples, lists or dicts of those"
        )


def dataset_fingerprint(dataset: Any) -> dict[str, Any]:
    """The length and a sha256 over up to 16 evenly spaced samples of ``dataset``.

    Parameters
    ----------
    dataset
        Anything with ``len`` and integer indexing (a map-style :class:`torch.utils.data.Dataset`, a list, ...).

    Returns
    -------
    dict
        ``{"class": str, "length": int, "samples": [int, ...], "sha256": str}``.
    """
    try:
        length = len(dataset)
    except TypeError as error:
        raise TypeError(
            f"dataset_fingerprint needs a dataset with a length (map-style), got {type(dataset).__name__}"
        ) from error
    count = min(length, _SAMPLES)
    positions = sorted({(i * (length - 1)) // max(count - 1, 1) for i in range(count)}) if count else []
    digest = hashlib.sha256(f"{length}".encode())
    for position in positions:
        digest.update(f"#{position}".encode())
        _update_sample(digest, dataset[position])
    return {"class": stable_name(dataset), "length": length, "samples": positions, "sha256": digest.hexdigest()}


DIGEST_BYTES = 32  # sha256


def sample_digest(index: int, item: Any) -> bytes:
    """The sha256 of dataset item ``index`` (its position and every part of it: input, label, ...)."""
    digest = hashlib.sha256(f"#{int(index)}".encode())
    _update_sample(digest, item)
    return digest.digest()


def batch_digest(sample_digests: Sequence[bytes]) -> bytes:
    """The sha256 of one batch: its samples' digests in order."""
    return hashlib.sha256(b"".join(sample_digests)).digest()


def combine_digests(length: int, batch_size: int, digests: np.ndarray) -> str:
    """The exact dataset fingerprint (hex sha256): the batch digests ``(batches, 32)`` uint8 in batch order.

    Examples
    --------
    >>> data = [float(i) for i in range(5)]
    >>> batches = [[0, 1], [2, 3], [4]]
    >>> rows = [batch_digest([sample_digest(i, data[i]) for i in b]) for b in batches]
    >>> combine_digests(5, 2, np.frombuffer(b"".join(rows), np.uint8).reshape(3, 32)) == combine_digests(
    ...     5, 2, batch_digests(data, 2, progress=False))
    True
    """
    digests = np.ascontiguousarray(digests, dtype=np.uint8)
    expected = -(-int(length) // int(batch_size))
    if digests.shape != (expected, DIGEST_BYTES):
        raise ValueError(f"expected {expected} batch digests of {DIGEST_BYTES} bytes, got an array {digests.shape}")
    digest = hashlib.sha256(f"{int(length)}/{int(batch_size)}".encode())
    digest.update(digests.tobytes())
    return digest.hexdigest()


class _Hashed(torch.utils.data.Dataset[bytes]):
    """A dataset whose items are their digests (for a DataLoader: workers hash in parallel)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> bytes:
        return sample_digest(index, self.dataset[index])


def _join(items: list[bytes]) -> bytes:
    return batch_digest(items)


def batch_digests(
    dataset: Any,
    batch_size: int,
    batches: Sequence[int] | None = None,
    *,
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """The digests ``(len(batches), 32)`` uint8 of the fixed batches ``batches`` (default: all) of ``dataset``.

    Batch ``b`` holds samples ``b * batch_size`` to ``(b + 1) * batch_size - 1``. This reads the samples (with
    ``num_workers`` DataLoader workers) but runs no model.
    """
    length = len(dataset)
    count = -(-length // batch_size)
    numbers = list(range(count)) if batches is None else [int(b) for b in batches]
    if not numbers:
        return np.zeros((0, DIGEST_BYTES), dtype=np.uint8)
    sampler = [list(range(b * batch_size, min((b + 1) * batch_size, length))) for b in numbers]
    loader: torch.utils.data.DataLoader[bytes] = torch.utils.data.DataLoader(
        _Hashed(dataset), batch_sampler=sampler, num_workers=num_workers, collate_fn=_join
    )
    rows = []
    bar = progress_bar(len(numbers), "glocal: hashing the dataset", enabled=progress, unit="batch")
    for digest in loader:
        rows.append(digest)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), DIGEST_BYTES).copy()


def digest_changes(
    expected: np.ndarray, actual: np.ndarray, batches: Sequence[int], batch_size: int, length: int
) -> list[str]:
    """Lines naming the batches (and their sample ids) whose digests differ, e.g. ``"samples 64-95 (batch 2)"``."""
    lines = []
    for row, number in enumerate(batches):
        if not np.array_equal(expected[row], actual[row]):
            first, last = number * batch_size, min((number + 1) * batch_size, length) - 1
            lines.append(f"samples {first}-{last} (batch {number})")
    return lines


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text[:12] + "…"  # a sha256
    return text if len(text) <= 80 else text[:77] + "…"


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):  # an empty mapping contributes no entries
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differences(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Why two fingerprints (or manifests holding them) differ, one line per differing entry.

    Parameters
    ----------
    expected
        What the index holds, e.g. ``{"model": model_fingerprint(...), "composite": ...}``.
    actual
        What is given now, with the same layout.

    Returns
    -------
    list of str
        Empty if equal; otherwise lines such as ``"model.sha256: index has 3f2a…, given model has 9b1c…"``.

    Examples
    --------
    >>> differences({"model": {"parameters": 10}}, {"model": {"parameters": 12}})
    ['model.parameters: index has 10, given model has 12']
    """
    old, new = _flatten(expected, ""), _flatten(actual, "")
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if key in old and key in new and old[key] == new[key]:
            continue
        given = f"given {key.split('.')[0]}"
        if key not in new:
            lines.append(f"{key}: index has {_short(old[key])}, {given} has none")
        elif key not in old:
            lines.append(f"{key}: index has none, {given} has {_short(new[key])}")
        else:
            lines.append(f"{key}: index has {_short(old[key])}, {given} has {_short(new[key])}")
    return lines
