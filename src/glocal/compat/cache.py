"""zennit-crp's ``crp.cache``: caches of rendered reference samples for ``FeatureVisualization``.

:class:`Cache` is the interface ``FeatureVisualization(..., cache=...)`` calls (subclass it and implement ``save``,
``load`` and ``extend_dict``); :class:`ImageCache` keeps PIL images as PNG files in zennit-crp's folder layout
``<path>/<function>/<plot_fn>/<mode>_<Composite>[_rf]/<layer>/<id>_<tuple index>_<rank>.png``, so a cache written by
zennit-crp is read here and the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputError

__all__ = ["Cache", "ImageCache"]


class Cache:
    """Interface of a cache of rendered references; ``path`` is where it keeps them."""

    def __init__(self, path: str | Path = "cache") -> None:
        self.path = Path(path)

    def save(
        self,
        ref_c: dict[Any, Any],
        layer_name: str,
        mode: str,
        r_range: tuple[int, int],
        composite: Any,
        rf: bool,
        f_name: str,
        plot_name: str,
        **kwargs: Any,
    ) -> None:
        """Keep the rendered references ``ref_c`` (ranks ``r_range``) of ``f_name`` drawn by ``plot_name``."""
        raise NotImplementedError("a Cache subclass must implement save")

    def load(
        self,
        concept_ids: list[Any],
        layer_name: str,
        mode: str,
        r_range: tuple[int, int],
        composite: Any,
        rf: bool,
        f_name: str,
        plot_name: str,
        **kwargs: Any,
    ) -> tuple[dict[Any, Any], dict[Any, tuple[int, int]]]:
        """``(found, missing)``: cached references by id, and per id the rank range still to compute."""
        raise NotImplementedError("a Cache subclass must implement load")

    def extend_dict(self, ref_original: dict[Any, Any], rf_addition: dict[Any, Any]) -> dict[Any, Any]:
        """``ref_original`` with the references of ``rf_addition`` appended (computed ranks after cached ones)."""
        raise NotImplementedError("a Cache subclass must implement extend_dict")


class ImageCache(Cache):
    """PNG files of the PIL images that plot functions return: lists (``vis_opaque_img``) or pairs of lists
    (``vis_img_heatmap``).

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> cache = ImageCache(tempfile.mkdtemp())
    >>> pictures = {3: [Image.new("RGB", (2, 2)), Image.new("RGB", (2, 2))]}
    >>> cache.save(pictures, "conv", "relevance", (0, 2), None, False, "get_max_reference", "vis_opaque_img")
    >>> found, missing = cache.load([3, 4], "conv", "relevance", (0, 3), None, False, "get_max_reference",
    ...                             "vis_opaque_img")
    >>> len(found[3]), missing
    (2, {3: (2, 3), 4: (0, 3)})
    """

    def _create_path(
        self, layer_name: str, mode: str, composite: Any, rf: bool, func_name: str, plot_name: str
    ) -> Path:
        folder = f"{mode}_{type(composite).__name__}" + ("_rf" if rf else "")
        path = self.path / func_name / plot_name / folder / layer_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _save_img_list(images: list[Any], key: Any, tuple_index: int, r_range: tuple[int, int], path: Path) -> None:
        for image, rank in zip(images, range(*r_range), strict=False):
            if not isinstance(image, Image.Image):
                raise InputError(
                    f"ImageCache saves PIL images, got a {type(image).__name__}; use a plot_fn that returns PIL images "
                    "(vis_img_heatmap, vis_opaque_img) or write a Cache subclass for other values"
                )
            image.save(path / f"{key}_{tuple_index}_{rank}.png", optimize=True)

    def save(  # type: ignore[override]  # zennit-crp's ImageCache names the parameters so
        self,
        ref_dict: dict[Any, Any],
        layer_name: str,
        mode: str,
        r_range: tuple[int, int],
        composite: Any,
        rf: bool,
        func_name: str,
        plot_name: str,
    ) -> None:
        """Write each picture as ``<id>_<0 or 1>_<rank>.png`` (``1``: the second list of a pair)."""
        path = self._create_path(layer_name, mode, composite, rf, func_name, plot_name)
        for key, value in ref_dict.items():
            if isinstance(value, tuple):
                self._save_img_list(value[0], key, 0, r_range, path)
                self._save_img_list(value[1], key, 1, r_range, path)
            elif len(value) and isinstance(value[0], Image.Image):
                self._save_img_list(value, key, 0, r_range, path)

    @staticmethod
    def _load_img_list(
        key: Any, tuple_index: int, r_range: tuple[int, int], path: Path
    ) -> tuple[list[Image.Image], tuple[int, int] | None]:
        images: list[Image.Image] = []
        for rank in range(*r_range):
            file = path / f"{key}_{tuple_index}_{rank}.png"
            if not file.exists():
                return images, (rank, r_range[-1])
            images.append(Image.open(file))
        return images, None

    def load(  # type: ignore[override]  # zennit-crp's ImageCache names the parameters so
        self,
        indices: list[Any],
        layer_name: str,
        mode: str,
        r_range: tuple[int, int],
        composite: Any,
        rf: bool,
        func_name: str,
        plot_name: str,
    ) -> tuple[dict[Any, Any], dict[Any, tuple[int, int]]]:
        """The cached pictures of ranks ``r_range`` (from its start up to the first missing one) and what is missing."""
        path = self._create_path(layer_name, mode, composite, rf, func_name, plot_name)
        found: dict[Any, Any] = {}
        missing: dict[Any, tuple[int, int]] = {}
        for key in indices:
            first, first_missing = self._load_img_list(key, 0, r_range, path)
            second, _ = self._load_img_list(key, 1, r_range, path)
            if first:
                found[key] = (first, second) if second else first
            if first_missing:
                missing[key] = first_missing
        return found, missing

    def extend_dict(self, ref_original: dict[Any, Any], rf_addition: dict[Any, Any]) -> dict[Any, Any]:
        """Append the lists (or both lists of pairs) of ``rf_addition`` to those of ``ref_original``."""
        for key, value in rf_addition.items():
            if key not in ref_original:
                ref_original[key] = value
            elif isinstance(value, tuple):
                ref_original[key][0].extend(value[0])
                ref_original[key][1].extend(value[1])
            elif isinstance(value, list):
                ref_original[key].extend(value)
            else:
                raise InputError(f"ImageCache extends lists or pairs of lists, got a {type(value).__name__}")
        return ref_original
