"""Concept flipping and heatmap deletion on real models: MobileNetV2 on real photos (no labels needed) and the
pretrained MNIST CNN on real digits. Switching off the most relevant concepts first must lower the explained logit
faster than random orders, and those faster than least relevant first."""

from __future__ import annotations

import pytest
import torch

from glocal import Attributor
from glocal.evaluation import concept_flipping, heatmap_deletion
from real_models import mnist_cnn, mnist_digits, mobilenet_v2, photos


def test_mobilenet_v2_on_photos():
    model, inputs = mobilenet_v2(), photos(("chelsea", "coffee"))
    result = concept_flipping(Attributor(model, "auto"), inputs, "features.14", steps=8, random_orders=3)
    with torch.no_grad():
        output = model(inputs)
    assert list(result.targets) == output.argmax(1).tolist()
    # step 0 is the unperturbed model, step S has every channel off (the same for every order)
    assert result.logits["morf"][:, 0].tolist() == pytest.approx(output.max(1).values.tolist(), abs=1e-3)
    for order in result.orders:
        assert torch.allclose(result.curves(order)[:, -1], result.logits["morf"][:, -1], atol=1e-4)
    morf, random, lerf = (result.aopc_per_sample(o) for o in ("morf", "random", "lerf"))
    assert bool((morf > random).all()) and bool((random > lerf).all())


def test_mnist_cnn_on_digits():
    model, (inputs, _) = mnist_cnn(), mnist_digits(30)
    attributor = Attributor(model, "auto")
    result = concept_flipping(attributor, inputs, "conv_layers.3", steps=8, random_orders=3, progress=False)
    test = result.wilcoxon()
    assert test.pvalue < 1e-3 and test.n == 30
    assert result.aopc("morf") > result.aopc("actmax") > result.aopc("lerf")
    deletion = heatmap_deletion(attributor, inputs[:2], [("conv_layers.3", 0), ("conv_layers.3", 1)], steps=4)
    assert deletion.relevance.shape == (2, 2, 5) and deletion.random_relevance.shape == (5, 2, 2, 5)
