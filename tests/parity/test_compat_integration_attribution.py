"""zennit-crp's integration tests of attributions (``tests/test_integration.py``: ``test_fashion_attribution`` and
``test_fashion_generator_attribution``) with ``glocal.compat``, on the same trained FashionMNIST model and sample.

zennit-crp compares with ``.npz`` files it once wrote; here the references are computed by running zennit-crp itself
in the test (see :func:`close` for the tolerance), and its own assertions (the sole path through ``conv2`` equals
blocking the parallel branch) are kept.
Its composite ``EpsilonPlus([SequentialMergeBatchNorm()])`` passes the canonizers by keyword (zennit >= 0.4.7).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from parity_models import fashion_composite, fashion_images, fashion_labels, fashion_model

from glocal.compat.attribution import CondAttribution

crp_attribution = pytest.importorskip("crp.attribution")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fashion() -> tuple[torch.nn.Module, torch.Tensor, int]:
    model = fashion_model()
    target = int(fashion_labels(1)[0])
    return model, fashion_images(1), target


def close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal within 1e-5 of the largest magnitude, and not trivially (not all zero).

    zennit-crp's own criterion, ``np.allclose`` against its stored files, allows 1e-8 near zero: tighter than the
    float32 rounding of two implementations that add in different orders (up to 1.8e-7 here, on values up to 1.2).
    """
    scale = float(expected.abs().max())
    return actual.shape == expected.shape and float((actual - expected).abs().max()) <= 1e-5 * scale and scale > 0


def theirs(model: torch.nn.Module) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return crp_attribution.CondAttribution(copy.deepcopy(model))


def test_fashion_attribution(fashion: tuple[torch.nn.Module, torch.Tensor, int]) -> None:
    model, test_sample, target = fashion
    attribution = CondAttribution(model)
    composite = fashion_composite()
    # abs() as init_rel, broadcasting, parallel and partial heatmaps at once
    conditions = [
        {"y": target},
        {"y": target, "conv2": []},
        {"y": target, "conv2": [2]},
        {"y": target, "parallel.0": []},
        {"y": target, "parallel.0": [], "conv2": [3, 2, 1]},
    ]
    kwargs: dict[str, Any] = {"record_layer": ["conv1", "conv2"], "init_rel": abs}
    attr = attribution(test_sample, conditions, composite, exclude_parallel=False, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = theirs(model)(
            test_sample.clone().requires_grad_(), conditions, fashion_composite(), exclude_parallel=False, **kwargs
        )
    heatmaps, conv1_relevances = reference.heatmap, reference.relevances["conv1"]
    assert close(attr.heatmap, heatmaps)
    assert close(attr.relevances["conv1"], conv1_relevances)
    assert close(attr.relevances["conv2"], reference.relevances["conv2"])  # masked, as zennit-crp's

    # exclude parallel: the sole path through conv2 equals blocking the parallel branch
    conditions = [{"y": target, "conv2": [3, 2, 1]}]
    attr_p = attribution(test_sample, conditions, fashion_composite(), exclude_parallel=True, **kwargs)
    assert close(attr_p.heatmap[-1], heatmaps[-1])
    assert close(attr_p.relevances["conv1"][-1], conv1_relevances[-1])
    assert not close(attr_p.heatmap[-1], heatmaps[2])  # it differs from letting relevance around conv2


def test_fashion_generator_attribution(fashion: tuple[torch.nn.Module, torch.Tensor, int]) -> None:
    model, test_sample, target = fashion
    attribution = CondAttribution(model)
    kwargs: dict[str, Any] = {"record_layer": ["conv1"], "init_rel": abs, "batch_size": 5, "verbose": False}

    def generated(source: Any, conditions: list[dict[str, Any]], exclude_parallel: bool) -> tuple[Any, Any]:
        heatmaps, relevances = [], []
        sample = test_sample.clone().requires_grad_() if source is not attribution else test_sample
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for attr in source.generate(
                sample, conditions, fashion_composite(), exclude_parallel=exclude_parallel, **kwargs
            ):
                assert len(attr.heatmap) <= 5
                heatmaps.append(attr.heatmap)
                relevances.append(attr.relevances["conv1"])
        return torch.cat(heatmaps, dim=0), torch.cat(relevances, dim=0)

    conditions = [{"y": target, "parallel.0": [], "conv2": [i]} for i in np.arange(0, 16)]
    gen_heatmaps, gen_conv1_relevances = generated(theirs(model), conditions, exclude_parallel=False)
    heatmaps, relevances = generated(attribution, conditions, exclude_parallel=False)
    assert heatmaps.shape == (16, 28, 28)
    assert close(heatmaps, gen_heatmaps)
    assert close(relevances, gen_conv1_relevances)

    # exclude parallel
    conditions = [{"y": target, "conv2": [i]} for i in np.arange(0, 16)]
    heatmaps, relevances = generated(attribution, conditions, exclude_parallel=True)
    assert close(heatmaps, gen_heatmaps)
    assert close(relevances, gen_conv1_relevances)
