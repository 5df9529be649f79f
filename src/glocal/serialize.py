"""JSON forms of tensors and JSON input, shared by the results that can be saved and loaded back (graphs, paths,
atlases).

A tensor becomes ``{"dtype": ..., "shape": [...], "base64": ...}``: its values' bytes (little-endian, row-major) in
base64, a third larger than binary and far smaller than a list of numbers; every value survives the round trip
exactly.

>>> tensor = torch.tensor([[0.1, -2.0]], dtype=torch.float32)
>>> torch.equal(tensor_from_dict(tensor_to_dict(tensor)), tensor)
True
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError

__all__ = ["heatmap_entry", "heatmap_from", "read_json", "tensor_from_dict", "tensor_to_dict", "write_json"]


def tensor_to_dict(tensor: torch.Tensor) -> dict[str, Any]:
    """``tensor`` as JSON-serialisable values: dtype name, shape and the flattened values."""
    data = tensor.detach().cpu().contiguous()
    raw = data.numpy().astype(data.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
    return {
        "dtype": str(data.dtype).removeprefix("torch."),
        "shape": list(data.shape),
        "base64": base64.b64encode(raw).decode("ascii"),
    }


def tensor_from_dict(data: Mapping[str, Any]) -> torch.Tensor:
    """The tensor back from :func:`tensor_to_dict`'s form."""
    dtype = getattr(torch, str(data["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise InputError(f"unknown tensor dtype {data['dtype']!r} in saved data; expected e.g. 'float32'")
    shape = [int(n) for n in data["shape"]]
    array = np.frombuffer(
        base64.b64decode(data["base64"]), dtype=torch.empty(0, dtype=dtype).numpy().dtype.newbyteorder("<")
    )
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="))).reshape(shape)


def heatmap_entry(heatmap: torch.Tensor | None, include: bool) -> dict[str, Any]:
    """``{"heatmap": <tensor form>}`` to merge into a saved item, or ``{}`` when not ``include`` or no heatmap."""
    return {"heatmap": tensor_to_dict(heatmap)} if include and heatmap is not None else {}


def heatmap_from(item: Mapping[str, Any]) -> torch.Tensor | None:
    """The heatmap that :func:`heatmap_entry` saved in ``item``, or ``None`` where none was saved."""
    return tensor_from_dict(item["heatmap"]) if item.get("heatmap") is not None else None


def write_json(data: Any, path: str | os.PathLike[str] | None = None, indent: int | None = 2) -> str:
    """``data`` as JSON text, also written (UTF-8) to ``path`` when given; the text is returned either way."""
    text = json.dumps(data, indent=indent)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def read_json(source: str | os.PathLike[str]) -> Any:
    """Parsed JSON from a file path, or from JSON text (a string that starts with ``{`` or ``[``)."""
    if isinstance(source, str) and source.lstrip()[:1] in ("{", "["):
        text = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"no JSON file at {str(path)!r}; pass the path a to_json call wrote, or its text")
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"the saved data is not valid JSON ({error}); pass what a to_json call wrote") from error
