"""glocal.compat's feature visualization side by side with zennit-crp's, on the trained FashionMNIST CNN.

zennit-crp's own integration test (``test_fashion_feature_visualization``) and its feature-visualization tutorial run
here against both packages on the first 400 validation images: zennit-crp's ``FeatureVisualization.run`` (its
defaults: ``max_target="sum"``, ``abs_norm=True``) and glocal.compat's, then references, loaders, caches and
statistics compared. Ties have no defined order in zennit-crp, so rankings are compared where a score is unique.
"""

from __future__ import annotations

import contextlib
import io
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
from parity_models import fashion_composite, fashion_images, fashion_labels, fashion_model
from PIL import Image

import glocal.compat.cache as compat_cache
import glocal.compat.helper as compat_helper
import glocal.compat.image as compat_image
from glocal.compat.attribution import CondAttribution
from glocal.compat.concepts import ChannelConcept
from glocal.compat.maximization import load_maximization
from glocal.compat.statistics import load_stat_targets, load_statistics
from glocal.compat.visualization import FeatureVisualization
from glocal.errors import InputError

matplotlib.use("Agg")
crp_attribution = pytest.importorskip("crp.attribution")
crp_concepts = pytest.importorskip("crp.concepts")
crp_visualization = pytest.importorskip("crp.visualization")
crp_helper = pytest.importorskip("crp.helper")
crp_image = pytest.importorskip("crp.image")

SAMPLES = 400
LAYERS = ("conv2", "parallel.0")
CONCEPTS = [0, 2, 10, 11]  # those of zennit-crp's integration test


class Fashion(torch.utils.data.Dataset):
    """``(image (1, 28, 28) in [0, 1], label)``, as zennit-crp's test reads FashionMNIST."""

    def __init__(self) -> None:
        self.images = fashion_images(SAMPLES)
        self.labels = fashion_labels(SAMPLES).tolist()

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def quiet(function: Any, *args: Any, **kwargs: Any) -> Any:
    """zennit-crp prints its progress."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return function(*args, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def fast_zennit_crp() -> Iterator[None]:
    """zennit-crp calls gc.collect() after every checkpoint of each of its four collectors (8x its scan time here)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("crp.maximization", "crp.statistics"):
            patch.setattr(f"{name}.gc", types.SimpleNamespace(collect=lambda: 0))
        yield


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, dataset = fashion_model(), Fashion()
    root = tmp_path_factory.mktemp("fashion")
    crp_fv = crp_visualization.FeatureVisualization(
        crp_attribution.CondAttribution(model),
        dataset,
        dict.fromkeys(LAYERS, crp_concepts.ChannelConcept()),
        path=str(root / "crp"),
    )
    quiet(crp_fv.run, fashion_composite(), 0, SAMPLES, 100)
    fv = FeatureVisualization(
        CondAttribution(model), dataset, dict.fromkeys(LAYERS, ChannelConcept()), path=root / "gl"
    )
    fv.run(fashion_composite(), 0, SAMPLES, 100)
    yield {"model": model, "dataset": dataset, "crp": crp_fv, "fv": fv, "root": root}
    torch.set_num_threads(threads)


def unique(scores: np.ndarray) -> np.ndarray:
    """Rows of a column whose score no other row shares (within 1e-5 relative)."""
    scale = max(float(np.abs(scores).max()), 1e-12)
    return (np.abs(scores[:, None] - scores[None, :]) <= 1e-5 * scale).sum(1) == 1


@pytest.mark.parametrize("kind", ["ActMax", "RelMax"])
def test_samples_are_zennit_crps(fashion: dict[str, Any], kind: str) -> None:
    """zennit-crp's default abs_norm: ActMax and RelMax keep the same 40 samples, in the same order, same scores."""
    fv, crp_fv = fashion["fv"], fashion["crp"]
    assert fv.ActMax.index_mode == "actmax_sum_norm" and fv.RelMax.index_mode == "relmax_sum_norm"
    compared = 0
    for layer in LAYERS:
        ids, scores, positions = load_maximization(getattr(fv, kind).PATH, layer)
        crp_ids, crp_scores, crp_positions = crp_helper.load_maximization(getattr(crp_fv, kind).PATH, layer)
        assert ids.shape == crp_ids.shape == (40, 16)
        np.testing.assert_allclose(scores, crp_scores, rtol=1e-4, atol=1e-7)
        for concept in range(16):
            keep = unique(np.asarray(crp_scores[:, concept]))
            np.testing.assert_array_equal(ids[keep, concept], crp_ids[keep, concept])
            np.testing.assert_array_equal(positions[keep, concept], crp_positions[keep, concept])
            compared += int(keep.sum())
        # what the references show: get_max_reference without a composite gives the samples themselves
        mode = "activation" if kind == "ActMax" else "relevance"
        got = fv.get_max_reference(CONCEPTS, layer, mode, (0, 8))
        expected = crp_fv.get_max_reference(CONCEPTS, layer, mode, (0, 8))
        assert list(got) == list(expected) == CONCEPTS
        for concept in CONCEPTS:
            keep = unique(np.asarray(crp_scores[:, concept]))[:8]
            torch.testing.assert_close(got[concept][keep], expected[concept][keep])
    assert compared > 1000
    for indices in ([7], [3, 9, 4]):
        got, expected = fv.get_data_concurrently(indices), crp_fv.get_data_concurrently(indices)
        torch.testing.assert_close(got[0], expected[0].detach())
        assert got[1] == expected[1]


def test_unnormalised_actmax_is_zennit_crps_too(fashion: dict[str, Any], tmp_path: Path) -> None:
    model, dataset = fashion["model"], fashion["dataset"]
    crp_fv = crp_visualization.FeatureVisualization(
        crp_attribution.CondAttribution(model),
        torch.utils.data.Subset(dataset, range(120)),
        {"conv2": crp_concepts.ChannelConcept()},
        abs_norm=False,
        path=str(tmp_path / "crp"),
    )
    quiet(crp_fv.run, fashion_composite(), 0, 120, 60)
    fv = FeatureVisualization(
        CondAttribution(model),
        torch.utils.data.Subset(dataset, range(120)),
        {"conv2": ChannelConcept()},
        abs_norm=False,
        path=tmp_path / "gl",
    )
    fv.run(fashion_composite(), batch_size=60)
    assert fv.ActMax.index_mode == "actmax_sum_raw"
    ids, scores, _ = load_maximization(fv.ActMax.PATH, "conv2")
    crp_ids, crp_scores, _ = crp_helper.load_maximization(crp_fv.ActMax.PATH, "conv2")
    np.testing.assert_allclose(scores, crp_scores, rtol=1e-4, atol=1e-4)
    for concept in range(16):
        keep = unique(np.asarray(crp_scores[:, concept]))
        np.testing.assert_array_equal(ids[keep, concept], crp_ids[keep, concept])


def test_integration_flow(fashion: dict[str, Any]) -> None:
    """zennit-crp's test_fashion_feature_visualization: receptive-field references of conv2, tensors back.

    ActMax: the same samples and heatmaps. RelMax: the same samples; the heatmaps start from relevance (each sample's
    label), not from the activation as in zennit-crp (documented difference), and equal zennit-crp's CondAttribution
    with that condition.
    """
    fv, crp_fv, composite = fashion["fv"], fashion["crp"], fashion_composite()
    _, crp_scores, crp_positions = crp_helper.load_maximization(crp_fv.ActMax.PATH, "conv2")
    got = fv.get_max_reference(CONCEPTS, "conv2", "activation", (0, 4), composite, rf=True, plot_fn=None)
    expected = crp_fv.get_max_reference(CONCEPTS, "conv2", "activation", (0, 4), composite, rf=True, plot_fn=None)
    for concept in CONCEPTS:
        assert unique(np.asarray(crp_scores[:, concept]))[:4].all()
        torch.testing.assert_close(got[concept][0], expected[concept][0])
        torch.testing.assert_close(got[concept][1], expected[concept][1], rtol=1e-5, atol=1e-6)
        assert got[concept][1].abs().sum() > 0
    crp_ids, crp_scores, crp_positions = crp_helper.load_maximization(crp_fv.RelMax.PATH, "conv2")
    got = fv.get_max_reference(CONCEPTS, "conv2", "relevance", (0, 4), composite, rf=True, plot_fn=None)
    expected = crp_fv.get_max_reference(CONCEPTS, "conv2", "relevance", (0, 4), composite, rf=True, plot_fn=None)
    oracle = crp_attribution.CondAttribution(fashion["model"])
    for concept in CONCEPTS:
        assert unique(np.asarray(crp_scores[:, concept]))[:4].all()
        torch.testing.assert_close(got[concept][0], expected[concept][0])
        ids = [int(i) for i in crp_ids[:4, concept]]
        data = torch.stack([fashion["dataset"][i][0] for i in ids]).requires_grad_()
        conditions = [
            {"conv2": {concept: int(n)}, "y": [fashion["dataset"][i][1]]}
            for i, n in zip(ids, crp_positions[:4, concept], strict=True)
        ]
        heatmaps = oracle(data, conditions, fashion_composite(), mask_map=crp_concepts.ChannelConcept.mask_rf).heatmap
        torch.testing.assert_close(got[concept][1], heatmaps.detach(), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(got[concept][1], expected[concept][1], rtol=1e-3, atol=1e-5)


def assert_same_pictures(got: list[Image.Image], expected: list[Image.Image]) -> None:
    assert [p.size for p in got] == [p.size for p in expected]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(a.convert("RGBA")), np.asarray(b.convert("RGBA")))


@pytest.fixture
def readable_crp_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    """zennit-crp as on the Pillow it was written for (zennit's array palettes as bytes; see test_compat_fv_image)."""
    original = crp_image.zimage.imgify

    def imgify(*args: Any, **kwargs: Any) -> Image.Image:
        picture = original(*args, **kwargs)
        if picture.mode == "P" and isinstance(picture.palette.palette, np.ndarray):
            picture.putpalette(np.asarray(picture.palette.palette, dtype=np.uint8).tobytes(), "RGB")
        return picture

    monkeypatch.setattr(crp_image.zimage, "imgify", imgify)


def test_tutorial_flow(fashion: dict[str, Any], tmp_path: Path, readable_crp_pictures: None) -> None:
    """tutorials/feature_visualization.ipynb, sections 1-5, with a cache and zennit-crp's plot functions."""
    fv, crp_fv, composite = fashion["fv"], fashion["crp"], fashion_composite()
    model, dataset = fashion["model"], fashion["dataset"]
    # 1-3: references as pictures, vis_opaque_img and the receptive field, plot_grid
    ref_c = fv.get_max_reference(CONCEPTS[:2], "conv2", "activation", (0, 3), composite=composite, rf=True)
    crp_ref = crp_fv.get_max_reference(CONCEPTS[:2], "conv2", "activation", (0, 3), composite=composite, rf=True)
    for concept in CONCEPTS[:2]:
        assert_same_pictures(ref_c[concept][0], crp_ref[concept][0])
        assert_same_pictures(ref_c[concept][1], crp_ref[concept][1])
    opaque = fv.get_max_reference([2], "conv2", "activation", (0, 3), composite, True, compat_image.vis_opaque_img)
    crp_opaque = crp_fv.get_max_reference([2], "conv2", "activation", (0, 3), composite, True, crp_image.vis_opaque_img)
    assert_same_pictures(opaque[2], crp_opaque[2])
    figure = compat_image.plot_grid(ref_c, figsize=(6, 5), padding=False)
    assert len(figure.axes) == 2 * 2 * 3
    # 4: statistics
    targets, values = fv.compute_stats(CONCEPTS[0], "conv2", "relevance", top_N=3, norm=True)
    assert targets.dtype == np.int64 and len(targets) == 3 and float(values[0]) == 1.0
    ref_t = fv.get_stats_reference(CONCEPTS[0], "conv2", targets, "relevance", (0, 2), composite, True)
    assert list(ref_t) == [f"{CONCEPTS[0]}:{t}" for t in targets]
    assert all(len(pair[0]) == len(pair[1]) == 2 for pair in ref_t.values())
    # 5: caching and precomputing
    cache = compat_cache.ImageCache(path=tmp_path / "cache")
    cached_fv = FeatureVisualization(
        fv.attribution, dataset, fv.layer_map, path=fv.path, cache=cache, preprocess_fn=fv.preprocess_fn
    )
    first = cached_fv.get_max_reference(CONCEPTS[:2], "conv2", "activation", (0, 3), composite=composite, rf=True)
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*.png"))
    assert len(files) == 2 * 2 * 3
    calls: list[int] = []
    original = cached_fv._heatmaps
    cached_fv._heatmaps = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)  # type: ignore[method-assign]
    again = cached_fv.get_max_reference(CONCEPTS[:2], "conv2", "activation", (0, 3), composite=composite, rf=True)
    assert calls == []  # all from the cache
    for concept in CONCEPTS[:2]:
        assert_same_pictures(again[concept][0], first[concept][0])
        assert_same_pictures(again[concept][1], first[concept][1])
    longer = cached_fv.get_max_reference(CONCEPTS[:1], "conv2", "activation", (0, 5), composite=composite, rf=True)
    assert calls == [1] and len(longer[CONCEPTS[0]][0]) == 5  # ranks 3 and 4 computed, 0-2 loaded
    assert_same_pictures(longer[CONCEPTS[0]][1][:3], first[CONCEPTS[0]][1])
    # precompute_ref: the tutorial's layer_id_map from get_output_shapes; zennit-crp's cache gets the same pictures
    names = compat_helper.get_layer_names(model, [torch.nn.Conv2d])
    shapes = compat_helper.get_output_shapes(model, cached_fv.get_data_sample(0)[0], names)
    layer_id_map = {name: np.arange(0, shape[0]) for name, shape in shapes.items() if name in LAYERS}
    assert {name: len(ids) for name, ids in layer_id_map.items()} == {"conv2": 16, "parallel.0": 16}
    layer_id_map = {name: ids[:3] for name, ids in layer_id_map.items()}
    settings = {"plot_list": [compat_image.vis_opaque_img], "mode": "activation", "r_range": (0, 2), "rf": True}
    cached_fv.precompute_ref(layer_id_map, composite=composite, batch_size=32, **settings)
    crp_fv.Cache = pytest.importorskip("crp.cache").ImageCache(path=str(tmp_path / "crp_cache"))
    try:
        quiet(
            crp_fv.precompute_ref,
            layer_id_map,
            composite=composite,
            batch_size=32,
            **{**settings, "plot_list": [crp_image.vis_opaque_img]},
        )
    finally:
        crp_fv.Cache = None
    precomputed = tmp_path / "cache" / "get_max_reference" / "vis_opaque_img"
    ours = sorted(p.relative_to(tmp_path / "cache") for p in precomputed.rglob("*.png"))
    theirs = sorted(p.relative_to(tmp_path / "crp_cache") for p in (tmp_path / "crp_cache").rglob("*.png"))
    assert ours == theirs and len(ours) == 2 * 3 * 2  # zennit-crp's file layout
    for relative in ours:
        assert_same_pictures(
            [Image.open(tmp_path / "cache" / relative)], [Image.open(tmp_path / "crp_cache" / relative)]
        )
    with pytest.raises(InputError, match="cache"):
        fv.precompute_ref(layer_id_map, composite)


def test_loaders_read_compat_runs(fashion: dict[str, Any]) -> None:
    fv = fashion["fv"]
    targets = load_stat_targets(fv.RelStats.PATH)
    labels = sorted(set(fashion["dataset"].labels))
    assert targets.tolist() == labels
    for target in targets[:3]:
        ids, scores, _ = load_statistics(fv.RelStats.PATH, "conv2", int(target))
        for concept in (0, 5):
            expected_ids, expected_scores = fv.index.class_samples("conv2", concept, int(target))
            assert ids[: len(expected_ids), concept].tolist() == expected_ids
            np.testing.assert_allclose(scores[: len(expected_ids), concept], expected_scores)
            assert all(fashion["dataset"][i][1] == target for i in expected_ids)
    with pytest.raises(InputError, match="relevance only"):
        load_statistics(fv.ActStats.PATH, "conv2", 0)
    with pytest.raises(InputError, match=r"run glocal\.compat\.FeatureVisualization"):
        load_maximization(fashion["root"] / "nothing" / "RelMax_sum_normed", "conv2")


def test_opening_a_zennit_crp_folder(fashion: dict[str, Any], tmp_path: Path) -> None:
    """The tutorial opens zennit-crp's precomputed results by path, without running: they are imported once."""
    crp_fv = fashion["crp"]
    crp_root = Path(crp_fv.RelMax.PATH).parent
    opened = FeatureVisualization(
        CondAttribution(fashion["model"]), fashion["dataset"], dict.fromkeys(LAYERS, ChannelConcept()), path=crp_root
    )
    for mode, kind in (("relevance", "RelMax"), ("activation", "ActMax")):
        crp_ids, _, _ = crp_helper.load_maximization(getattr(crp_fv, kind).PATH, "conv2")
        got = opened.get_max_reference(CONCEPTS, "conv2", mode, (0, 6), plot_fn=None)
        for concept in CONCEPTS:
            expected = torch.stack([fashion["dataset"][int(i)][0] for i in crp_ids[:6, concept]])
            torch.testing.assert_close(got[concept], expected)
    assert (crp_root / "index_zennit_crp" / "manifest.json").exists()
    targets, _ = opened.compute_stats(CONCEPTS[0], "conv2", top_N=3)
    assert len(targets) == 3
    again = FeatureVisualization(opened.attribution, fashion["dataset"], opened.layer_map, path=crp_root)
    assert again.index.manifest["imported_from"] == "zennit-crp"
    empty = FeatureVisualization(opened.attribution, fashion["dataset"], opened.layer_map, path=tmp_path)
    with pytest.raises(InputError, match=r"call run\(composite"):
        empty.get_max_reference(0, "conv2")
