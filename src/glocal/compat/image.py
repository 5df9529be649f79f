"""zennit-crp's ``crp.image``: plot functions for reference samples, ``imgify`` and ``plot_grid``.

The pictures are pixel for pixel those of zennit-crp 0.6: the same gaussian blur (torchvision's kernel, written out
here so that torchvision is not needed), the same crop ranges (including zennit-crp's exclusive upper bound, which
leaves out the last row and column above the threshold) and :func:`zennit.image.imgify` for the colours.
``plot_grid`` needs matplotlib (``pip install glocal[viz]``) and, unlike zennit-crp's, also returns the figure.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import zennit.image
from PIL import Image

from ..errors import InputError

__all__ = ["get_crop_range", "imgify", "plot_grid", "vis_img_heatmap", "vis_opaque_img"]


def _zennit_imgify(image: torch.Tensor | np.ndarray, **kwargs: Any) -> Image.Image:
    """:func:`zennit.image.imgify`, with the palette of single-channel pictures stored as bytes.

    zennit puts a ``(256, 3)`` array as palette, which recent Pillow (13) can neither save nor convert.
    """
    picture = zennit.image.imgify(image, **kwargs)
    if picture.mode == "P" and picture.palette is not None and isinstance(picture.palette.palette, np.ndarray):
        picture.putpalette(np.asarray(picture.palette.palette, dtype=np.uint8).tobytes(), "RGB")
    return picture


def _max_norm(values: torch.Tensor, stabilize: float = 1e-10) -> torch.Tensor:
    return values / (values.max() + stabilize)


def _gaussian_blur(heatmap: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """torchvision's ``gaussian_blur(heatmap[None], kernel_size)[0]`` for one ``(H, W)`` heatmap (reflect padding)."""
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise InputError(f"kernel_size must be a positive odd number, got {kernel_size}")
    half = kernel_size // 2
    if half >= min(heatmap.shape[-2:]):
        raise InputError(
            f"kernel_size {kernel_size} needs heatmaps larger than {half} pixels per side (reflect padding), got "
            f"{tuple(heatmap.shape[-2:])}; pass a smaller kernel_size"
        )
    dtype = heatmap.dtype if heatmap.is_floating_point() else torch.float32
    sigma = kernel_size * 0.15 + 0.35
    steps = torch.linspace(-(kernel_size - 1) * 0.5, (kernel_size - 1) * 0.5, kernel_size, dtype=dtype)
    pdf = torch.exp(-0.5 * (steps / sigma).pow(2))
    line = (pdf / pdf.sum()).to(heatmap.device)
    kernel = torch.mm(line[:, None], line[None, :])[None, None]
    padded = torch.nn.functional.pad(heatmap.to(dtype)[None, None], [half] * 4, mode="reflect")
    return torch.nn.functional.conv2d(padded, kernel)[0, 0]


def get_crop_range(heatmap: torch.Tensor, crop_th: float) -> tuple[Any, Any, Any, Any]:
    """Rows and columns ``(row1, row2, col1, col2)`` to crop ``heatmap`` to where it exceeds ``crop_th``.

    As in zennit-crp, the result is meant for slicing ``[row1:row2, col1:col2]`` (so the last row and column above
    the threshold fall outside), and ``(0, -1, 0, -1)`` stands for "nothing above the threshold".

    Examples
    --------
    >>> heat = torch.zeros(5, 5); heat[1:4, 2:4] = 1.0
    >>> [int(i) for i in get_crop_range(heat, 0.5)]
    [1, 3, 2, 3]
    >>> get_crop_range(torch.zeros(3, 3), 0.5)
    (0, -1, 0, -1)
    """
    rows, columns = torch.where(heatmap > crop_th)
    if len(rows) == 0:
        return 0, -1, 0, -1
    row1, row2 = rows.min(), rows.max()
    col1, col2 = columns.min(), columns.max()
    if row1 >= row2 and col1 >= col2:
        return 0, -1, 0, -1
    return row1, row2, col1, col2


def _check_unit(name: str, value: float, closed: bool) -> None:
    if not (0 <= value <= 1 if closed else 0 <= value < 1):
        raise InputError(f"{name} must lie in [0, 1{']' if closed else ')'}, got {value}")


@torch.no_grad()
def vis_opaque_img(
    data_batch: torch.Tensor,
    heatmaps: torch.Tensor,
    rf: bool = False,
    alpha: float = 0.3,
    vis_th: float = 0.2,
    crop_th: float = 0.1,
    kernel_size: int = 19,
) -> list[Image.Image]:
    """Reference images with the parts below ``vis_th`` of the blurred, max-normalised heatmap faded to ``alpha``.

    With ``rf=True`` each image is cropped to where the blurred heatmap exceeds ``crop_th`` (see
    :func:`get_crop_range`); crops that would be empty are not applied. Returns one PIL image per sample.
    """
    _check_unit("alpha", alpha, closed=True)
    _check_unit("vis_th", vis_th, closed=False)
    _check_unit("crop_th", crop_th, closed=False)
    images = []
    for image, heatmap in zip(data_batch, heatmaps, strict=True):
        filtered = _max_norm(_gaussian_blur(heatmap, kernel_size))
        visible = filtered > vis_th
        if rf:
            row1, row2, col1, col2 = get_crop_range(filtered, crop_th)
            image_crop, visible_crop = image[..., row1:row2, col1:col2], visible[row1:row2, col1:col2]
            if image_crop.sum() != 0 and visible_crop.sum() != 0:
                image, visible = image_crop, visible_crop
        image = image * visible + image * ~visible * alpha
        images.append(_zennit_imgify(image.detach().cpu()))
    return images


@torch.no_grad()
def vis_img_heatmap(
    data_batch: torch.Tensor,
    heatmaps: torch.Tensor,
    rf: bool = False,
    crop_th: float = 0.1,
    kernel_size: int = 19,
    cmap: str = "bwr",
    vmin: float | None = None,
    vmax: float | None = None,
    symmetric: bool = True,
) -> tuple[list[Image.Image], list[Image.Image]]:
    """zennit-crp's default plot function: ``(images, heatmaps)``, two lists with one PIL image per sample.

    Heatmaps are coloured with ``cmap`` (see :func:`imgify`). With ``rf=True`` image and heatmap are cropped to where
    the blurred, max-normalised heatmap exceeds ``crop_th`` (crops that would be empty are not applied).

    Examples
    --------
    >>> heat = torch.zeros(1, 24, 24); heat[0, 8:14, 10:12] = 1.0
    >>> images, heats = vis_img_heatmap(torch.linspace(0, 1, 3 * 24 * 24).view(1, 3, 24, 24), heat)
    >>> images[0].size, heats[0].mode
    ((24, 24), 'P')
    """
    images, colored = [], []
    for image, heatmap in zip(data_batch, heatmaps, strict=True):
        if rf:
            filtered = _max_norm(_gaussian_blur(heatmap, kernel_size))
            row1, row2, col1, col2 = get_crop_range(filtered, crop_th)
            image_crop, heatmap_crop = image[..., row1:row2, col1:col2], heatmap[row1:row2, col1:col2]
            if image_crop.sum() != 0 and heatmap_crop.sum() != 0:
                image, heatmap = image_crop, heatmap_crop
        colored.append(imgify(heatmap, cmap=cmap, vmin=vmin, vmax=vmax, symmetric=symmetric))
        images.append(imgify(image))
    return images, colored


def imgify(
    image: Image.Image | torch.Tensor | np.ndarray,
    cmap: str = "bwr",
    vmin: float | None = None,
    vmax: float | None = None,
    symmetric: bool = False,
    level: float = 1.0,
    grid: bool = False,
    gridfill: Any = None,
    resize: int | None = None,
    padding: bool = False,
) -> Image.Image:
    """:func:`zennit.image.imgify` for tensors, arrays and PIL images, optionally resized and padded to a square.

    ``resize`` scales the longer side to that many pixels (nearest neighbour); ``padding`` centres the image on a
    transparent square.

    Examples
    --------
    >>> imgify(torch.linspace(0, 1, 24).view(3, 4, 2), resize=8, padding=True).size
    (8, 8)
    """
    if isinstance(image, torch.Tensor):
        picture = _zennit_imgify(
            image.detach().cpu(),
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            symmetric=symmetric,
            level=level,
            grid=grid,
            gridfill=gridfill,
        )
    elif isinstance(image, np.ndarray):
        picture = _zennit_imgify(
            image, cmap=cmap, vmin=vmin, vmax=vmax, symmetric=symmetric, level=level, grid=grid, gridfill=gridfill
        )
    elif isinstance(image, Image.Image):
        picture = image
    else:
        raise InputError(f"imgify takes a PIL image, torch.Tensor or numpy array, got {type(image).__name__}")
    if resize:
        ratio = resize / max(picture.size)
        width, height = picture.size
        picture = picture.resize((int(width * ratio), int(height * ratio)), Image.Resampling.NEAREST)
    if padding:
        side = resize if resize else max(picture.size)
        square = Image.new("RGBA", (side, side))
        square.putalpha(0)
        square.paste(picture, ((side - picture.size[0]) // 2, (side - picture.size[1]) // 2))
        picture = square
    return picture


def _grid_shape(value: Any) -> tuple[int, int]:
    """(rows per key, columns) of one value of ``ref_c``: a list of pictures, or a tuple of such lists."""
    if isinstance(value, tuple) and isinstance(value[0], Iterable):
        return len(value), len(list(value[0]))
    if isinstance(value, Iterable):
        return 1, len(list(value))
    raise InputError(
        "plot_grid takes {key: list of pictures} or {key: (list, list)} as get_max_reference returns, got "
        f"values of type {type(value).__name__}"
    )


def plot_grid(
    ref_c: dict[Any, Any],
    cmap_dim: int = 1,
    cmap: str = "bwr",
    vmin: float | None = None,
    vmax: float | None = None,
    symmetric: bool = True,
    resize: int | None = None,
    padding: bool = True,
    figsize: tuple[float, float] = (6, 6),
) -> Any:
    """Draw ``{key: pictures}`` (as :meth:`~glocal.compat.FeatureVisualization.get_max_reference` returns) as a grid.

    One row per key (labelled with the key); a value that is a tuple of lists gets one sub-row per list, and the
    sub-row ``cmap_dim`` (``1``: the heatmaps) is coloured with ``cmap``, ``vmin``, ``vmax``, ``symmetric``. Every
    picture goes through :func:`imgify` with ``resize`` and ``padding``. Shows the figure like zennit-crp and returns
    it (a ``matplotlib.figure.Figure``; zennit-crp returned ``None``), so that it can be saved.
    """
    try:
        import matplotlib.pyplot as plt
        from matplotlib import gridspec
    except ImportError as error:  # pragma: no cover - matplotlib is in the viz extra
        raise ImportError("plot_grid needs matplotlib: pip install 'glocal[viz]'") from error
    if cmap_dim not in (0, 1, 2):
        raise InputError(f"cmap_dim must be 0 or 1 (the sub-row coloured as a heatmap), got {cmap_dim!r}")
    if not ref_c:
        raise InputError("plot_grid got an empty dictionary; give it the result of get_max_reference")
    keys = list(ref_c)
    subrows, columns = _grid_shape(next(iter(ref_c.values())))
    figure = plt.figure(figsize=figsize)
    outer = gridspec.GridSpec(len(keys), 1, wspace=0, hspace=0.2)
    for row, key in enumerate(keys):
        inner = gridspec.GridSpecFromSubplotSpec(subrows, columns, subplot_spec=outer[row], wspace=0, hspace=0.1)
        for subrow in range(subrows):
            pictures: Sequence[Any] = ref_c[key][subrow] if subrows > 1 else ref_c[key]
            for column in range(columns):
                axes = plt.Subplot(figure, inner[subrow, column])  # type: ignore[arg-type]
                if subrow == cmap_dim:
                    picture = imgify(
                        pictures[column],
                        cmap=cmap,
                        vmin=vmin,
                        vmax=vmax,
                        symmetric=symmetric,
                        resize=resize,
                        padding=padding,
                    )
                else:
                    picture = imgify(pictures[column], resize=resize, padding=padding)
                axes.imshow(picture)
                axes.set_xticks([])
                axes.set_yticks([])
                if subrow == 0 and column == 0:
                    axes.set_ylabel(key)
                figure.add_subplot(axes)
    outer.tight_layout(figure)
    with warnings.catch_warnings():  # non-interactive backends (scripts, tests) cannot show; notebooks display it
        warnings.filterwarnings("ignore", message=".*non-interactive.*", category=UserWarning)
        figure.show()
    return figure
