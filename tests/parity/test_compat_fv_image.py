"""glocal.compat.image against zennit-crp's crp.image: the same pictures, pixel for pixel.

Images are real photos (skimage, 48 x 48); heatmaps are conditional heatmaps' stand-ins with a clear blob, a
negative part and noise, plus the edge cases (all zero, one hot pixel, everything above the threshold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from glocal.compat import image as compat_image
from glocal.errors import InputError

matplotlib.use("Agg")
crp_image = pytest.importorskip("crp.image")


def store_palette(picture: Image.Image) -> Image.Image:
    """zennit's array palette, which recent Pillow (13) can neither read nor save, stored as bytes (in place)."""
    if picture.mode == "P" and isinstance(picture.palette.palette, np.ndarray):
        picture.putpalette(np.asarray(picture.palette.palette, dtype=np.uint8).tobytes(), "RGB")
    return picture


@pytest.fixture(autouse=True)
def readable_crp_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    """zennit-crp as it works on the Pillow it was written for: its zennit pictures get a readable palette."""
    original = crp_image.zimage.imgify
    monkeypatch.setattr(crp_image.zimage, "imgify", lambda *args, **kwargs: store_palette(original(*args, **kwargs)))


def pixels(picture: Image.Image) -> np.ndarray:
    """RGBA values of a picture (palette pictures, i.e. heatmaps, through their palette)."""
    return np.asarray(picture.convert("RGBA"))


def photos(names: tuple[str, ...], size: int) -> torch.Tensor:
    """Real photos from skimage.data, centre-cropped to squares of ``size`` pixels, in [0, 1]."""
    skimage_data = pytest.importorskip("skimage.data")
    pictures = []
    for name in names:
        photo = torch.from_numpy(np.asarray(getattr(skimage_data, name)())[..., :3].copy()).permute(2, 0, 1)
        side = min(photo.shape[1:])
        top, left = (photo.shape[1] - side) // 2, (photo.shape[2] - side) // 2
        square = photo[:, top : top + side, left : left + side].float()[None] / 255
        pictures.append(torch.nn.functional.interpolate(square, size=(size, size), mode="area")[0])
    return torch.stack(pictures)


def assert_same_pictures(got: list[Image.Image], expected: list[Image.Image]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert isinstance(a, Image.Image)
        assert a.size == b.size and a.mode == b.mode
        np.testing.assert_array_equal(pixels(a), pixels(b))


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    images = photos(("chelsea", "coffee", "astronaut", "rocket", "chelsea", "coffee"), size=48)
    generator = torch.Generator().manual_seed(0)
    heatmaps = 0.05 * torch.randn(6, 48, 48, generator=generator)
    heatmaps[0, 10:20, 25:40] += 1.0  # a blob
    heatmaps[1, 30:44, 2:9] -= 2.0  # mostly negative, with a small positive blob
    heatmaps[1, 5:8, 5:8] += 0.5
    heatmaps[2] = 0.0
    heatmaps[2, 0, 0] = -1e-3  # (almost) no relevance: nothing to crop
    heatmaps[3] = 0.0
    heatmaps[3, 24, 24] = 3.0  # one hot pixel
    heatmaps[4] = heatmaps[4].abs() + 1.0  # everything above the threshold
    heatmaps[5, :, 40:] += 0.8  # a blob on the border (reflect padding of the blur)
    return images, heatmaps


def test_get_crop_range(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, heatmaps = batch
    for heatmap in heatmaps:
        for threshold in (0.0, 0.1, 0.5):
            got = compat_image.get_crop_range(heatmap, threshold)
            expected = crp_image.get_crop_range(heatmap, threshold)
            assert [int(v) for v in got] == [int(v) for v in expected]
    assert compat_image.get_crop_range(torch.zeros(4, 4), 0.1) == (0, -1, 0, -1)


@pytest.mark.parametrize("rf", [False, True])
def test_vis_opaque_img(batch: tuple[torch.Tensor, torch.Tensor], rf: bool) -> None:
    images, heatmaps = batch
    for kwargs in ({}, {"alpha": 0.6, "vis_th": 0.4, "crop_th": 0.3, "kernel_size": 7}):
        got = compat_image.vis_opaque_img(images, heatmaps, rf, **kwargs)
        assert_same_pictures(got, crp_image.vis_opaque_img(images, heatmaps, rf, **kwargs))
    if rf:  # the blob of sample 0 is cropped out
        assert got[0].size != (48, 48) and got[4].size != (48, 48)


@pytest.mark.parametrize("rf", [False, True])
def test_vis_img_heatmap(batch: tuple[torch.Tensor, torch.Tensor], rf: bool) -> None:
    images, heatmaps = batch
    for kwargs in ({}, {"crop_th": 0.3, "kernel_size": 5, "cmap": "coldnhot", "symmetric": False, "vmax": 2.0}):
        got = compat_image.vis_img_heatmap(images, heatmaps, rf, **kwargs)
        expected = crp_image.vis_img_heatmap(images, heatmaps, rf, **kwargs)
        assert isinstance(got, tuple) and len(got) == 2
        assert_same_pictures(got[0], expected[0])
        assert_same_pictures(got[1], expected[1])
        assert [p.size for p in got[0]] == [p.size for p in got[1]]


def test_imgify(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, heatmaps = batch
    inputs: list[Any] = [images[0], heatmaps[0], heatmaps[1].numpy(), images[1].numpy(), crp_image.imgify(images[2])]
    settings: list[dict[str, Any]] = [
        {},
        {"resize": 30},
        {"resize": 64, "padding": True},
        {"padding": True},
        {"cmap": "coldnhot", "symmetric": True, "vmin": -1.0, "vmax": 1.0},
        {"level": 2.0},
    ]
    for value in inputs:
        for kwargs in settings:
            got = compat_image.imgify(value, **kwargs)
            assert_same_pictures([got], [crp_image.imgify(value, **kwargs)])
    grid = torch.stack([heatmaps[0], heatmaps[1]])[:, None]
    assert_same_pictures([compat_image.imgify(grid, grid=True)], [crp_image.imgify(grid, grid=True)])
    with pytest.raises(InputError, match=r"PIL image, torch\.Tensor or numpy array"):
        compat_image.imgify([1, 2, 3])  # type: ignore[arg-type]


def figure_content(figure: Any) -> list[tuple[str, np.ndarray]]:
    """(y label, pixels) of every axes of a plot_grid figure, in drawing order."""
    return [(axes.get_ylabel(), np.asarray(axes.get_images()[0].get_array())) for axes in figure.axes]


@pytest.mark.parametrize("kwargs", [{}, {"padding": False, "resize": 32, "cmap": "coldnhot", "figsize": (6, 5)}])
def test_plot_grid(batch: tuple[torch.Tensor, torch.Tensor], kwargs: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    images, heatmaps = batch
    pairs = {3: (list(images[:2]), list(heatmaps[:2])), 7: (list(images[3:5]), list(heatmaps[3:5]))}
    pictures = {"a": compat_image.vis_opaque_img(images[:2], heatmaps[:2]), "b": list(images[3:5])}
    for ref_c in (pairs, pictures):
        got = compat_image.plot_grid(ref_c, **kwargs)
        crp_image.plot_grid(ref_c, **kwargs)
        expected = plt.gcf()
        assert got is not expected
        got_content, expected_content = figure_content(got), figure_content(expected)
        assert len(got_content) == len(expected_content) == 2 * 2 * (2 if ref_c is pairs else 1)
        for (label, array), (expected_label, expected_array) in zip(got_content, expected_content, strict=True):
            assert label == expected_label
            np.testing.assert_array_equal(array, expected_array)
        np.testing.assert_allclose(got.get_size_inches(), expected.get_size_inches())
        plt.close("all")


def test_plot_grid_checks_its_input() -> None:
    with pytest.raises(InputError, match="cmap_dim"):
        compat_image.plot_grid({0: [torch.zeros(3, 4, 4)]}, cmap_dim=5)
    with pytest.raises(InputError, match="get_max_reference"):
        compat_image.plot_grid({0: 3})


def test_blur_larger_than_the_image_is_explained() -> None:
    """zennit-crp fails inside torch's reflect padding; glocal says which kernel size fits."""
    images, heatmaps = torch.rand(1, 1, 8, 8), torch.rand(1, 8, 8)
    with pytest.raises(RuntimeError):
        crp_image.vis_opaque_img(images, heatmaps)
    with pytest.raises(InputError, match="smaller kernel_size"):
        compat_image.vis_opaque_img(images, heatmaps)
    small = compat_image.vis_opaque_img(images, heatmaps, kernel_size=5)
    assert_same_pictures(small, crp_image.vis_opaque_img(images, heatmaps, kernel_size=5))


def test_heatmap_pictures_can_be_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zennit gives single-channel pictures an array palette; recent Pillow (13) fails to save or resize them (so
    zennit-crp's ImageCache and plot_grid fail there). glocal's pictures carry the same colours as bytes."""
    monkeypatch.undo()  # zennit-crp as installed
    heatmap = torch.linspace(-1, 1, 64).reshape(8, 8)
    picture = compat_image.imgify(heatmap, symmetric=True, resize=16)
    picture.save(tmp_path / "heatmap.png")
    reloaded = Image.open(tmp_path / "heatmap.png")
    np.testing.assert_array_equal(pixels(reloaded), pixels(picture))
    original = crp_image.zimage.imgify(heatmap, symmetric=True)
    if isinstance(original.palette.palette, np.ndarray):  # the Pillow of this environment cannot read it
        with pytest.raises(TypeError):
            original.save(tmp_path / "zennit.png")
    expected = store_palette(original).resize((16, 16), Image.NEAREST)
    np.testing.assert_array_equal(pixels(picture), pixels(expected))
