"""glocal.compat.FeatureVisualization against zennit-crp's, on a tiny conv net and 24 random 8x8 images.

zennit-crp scans with its own FeatureVisualization.run (once normalised, once not); glocal scans with its index. Ties
(e.g. channels without any relevance) have no defined order in zennit-crp, so rankings are compared only where a
score is unique in its column.
"""

from __future__ import annotations

import contextlib
import io
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from zennit.composites import EpsilonPlusFlat

from glocal.compat import ChannelConcept, CondAttribution, FeatureVisualization, import_zennit_crp

crp_attribution = pytest.importorskip("crp.attribution")
crp_concepts = pytest.importorskip("crp.concepts")
crp_visualization = pytest.importorskip("crp.visualization")
crp_helper = pytest.importorskip("crp.helper")

LAYERS = ("0", "2")
K = 8


class Images(torch.utils.data.Dataset):
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(24, 1, 8, 8, generator=generator)
        self.labels = torch.randint(0, 3, (24,), generator=generator).tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 3),
    ).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, dataset = tiny_net(), Images()
    root = tmp_path_factory.mktemp("fv")
    crp_paths = {}
    for norm in (True, False):
        path = root / f"crp_{norm}"
        fv = crp_visualization.FeatureVisualization(
            crp_attribution.CondAttribution(model),
            dataset,
            {name: crp_concepts.ChannelConcept() for name in LAYERS},
            abs_norm=norm,
            path=str(path),
        )
        with contextlib.redirect_stdout(io.StringIO()), pytest.MonkeyPatch.context() as patch:
            # zennit-crp calls gc.collect() after each checkpoint of its four collectors: most of its time here
            for name in ("crp.maximization", "crp.statistics"):
                patch.setattr(f"{name}.gc", types.SimpleNamespace(collect=lambda: 0))
            fv.run(EpsilonPlusFlat(), 0, len(dataset), batch_size=10)
        crp_paths[norm] = path
    glocal_fv = FeatureVisualization(
        CondAttribution(model), dataset, {name: ChannelConcept() for name in LAYERS}, path=root / "glocal", k=K
    )
    glocal_fv.run(EpsilonPlusFlat(), batch_size=10)
    yield {"model": model, "dataset": dataset, "crp": crp_paths, "fv": glocal_fv, "root": root}
    torch.set_num_threads(threads)


def unique_ranks(scores: np.ndarray) -> np.ndarray:
    """Rows of a column whose score no other row shares (within 1e-5 relative)."""
    scale = max(float(np.abs(scores).max()), 1e-12)
    gaps = np.abs(scores[:, None] - scores[None, :]) <= 1e-5 * scale
    return gaps.sum(1) == 1


@pytest.mark.parametrize(
    ("mode", "norm"), [("relevance", True), ("activation", True), ("activation", False), ("relevance", False)]
)
def test_max_reference_sample_ids(setup: dict[str, Any], mode: str, norm: bool) -> None:
    folder = ("RelMax" if mode == "relevance" else "ActMax") + f"_sum_{'normed' if norm else 'unnormed'}"
    fv = (
        setup["fv"]
        if norm
        else FeatureVisualization(
            setup["fv"].attribution, setup["dataset"], setup["fv"].layer_map, abs_norm=False, path=setup["fv"].path, k=K
        )
    )
    compared = 0
    for layer in LAYERS:
        crp_ids, crp_scores, _ = crp_helper.load_maximization(setup["crp"][norm] / folder, layer)
        references = fv.get_max_reference(range(4), layer, mode=mode, r_range=(0, K), plot_fn=None)
        assert list(references) == [0, 1, 2, 3]
        for concept, samples in references.items():
            column = np.asarray(crp_scores[:, concept])
            for rank in np.flatnonzero(unique_ranks(column)[:K]):
                expected = setup["dataset"][int(crp_ids[rank, concept])][0]
                assert torch.equal(samples[rank], expected)
                compared += 1
    assert compared > 20


def test_compute_stats_classes(setup: dict[str, Any]) -> None:
    fv = FeatureVisualization(
        setup["fv"].attribution, setup["dataset"], setup["fv"].layer_map, abs_norm=False, path=setup["fv"].path, k=K
    )
    stats = setup["crp"][False] / "RelStats_sum_unnormed"
    targets = np.load(stats / "targets.npy").astype(float).astype(int)
    for layer in LAYERS:
        for concept in range(4):
            values = []
            for target in targets:
                _, rel, _ = crp_helper.load_statistics(stats, layer, target)
                values.append(float(np.asarray(rel[:5, concept]).mean()))
            expected = targets[np.argsort(values)[::-1]]
            classes, scores = fv.compute_stats(concept, layer, top_N=3, mean_N=5)
            if len(set(np.round(values, 5))) == len(values):
                assert classes.tolist() == expected.tolist()
                np.testing.assert_allclose(scores.numpy(), sorted(values, reverse=True), rtol=1e-4, atol=1e-6)


def test_import_round_trip(setup: dict[str, Any], tmp_path: Path) -> None:
    crp_root = setup["crp"][True]
    index = import_zennit_crp(crp_root, tmp_path / "imported", manifest_extra={"note": "test"})
    assert index.manifest["note"] == "test"
    assert set(index.layers) == set(LAYERS)
    for layer in LAYERS:
        for mode, folder in (("relmax_sum_norm", "RelMax_sum_normed"), ("actmax_sum_norm", "ActMax_sum_normed")):
            ids, scores, positions = crp_helper.load_maximization(crp_root / folder, layer)
            top = index.top(layer, mode)
            n = ids.shape[0]
            assert top.ids.shape == (ids.shape[1], n)
            np.testing.assert_array_equal(top.ids.numpy(), np.asarray(ids).T)
            np.testing.assert_array_equal(top.positions.numpy(), np.asarray(positions).T)
            np.testing.assert_allclose(top.scores.numpy(), np.asarray(scores).T)
        stats = crp_root / "RelStats_sum_normed"
        for target in np.load(stats / "targets.npy").astype(float).astype(int):
            ids, scores, _ = crp_helper.load_statistics(stats, layer, target)
            for concept in range(ids.shape[1]):
                got_ids, got_scores, _ = index.statistics(layer).class_entries(int(target), concept)
                assert got_ids.tolist() == np.asarray(ids[:, concept]).tolist()
                np.testing.assert_allclose(got_scores, np.asarray(scores[:, concept]), rtol=1e-6)
                # glocal's own API gives only the samples with positive relevance
                positive = np.asarray(scores[:, concept]) > 0
                assert (
                    index.class_samples(layer, concept, int(target))[0] == np.asarray(ids[positive, concept]).tolist()
                )
        assert index.top(layer, "relmax_max").ids.eq(-1).all()


def test_rf_batched_equals_one_by_one(setup: dict[str, Any]) -> None:
    fv = setup["fv"]
    for mode in ("relevance", "activation"):
        batched = fv.get_max_reference([1, 2], "2", mode, (0, 7), EpsilonPlusFlat(), True, None, batch_size=3)
        single = fv.get_max_reference([1, 2], "2", mode, (0, 7), EpsilonPlusFlat(), True, None, batch_size=1)
        for concept in (1, 2):
            for got, expected in zip(
                [*batched[concept][0], *batched[concept][1]], [*single[concept][0], *single[concept][1]], strict=True
            ):
                assert got.shape == expected.shape
                torch.testing.assert_close(got, expected)
        raw = fv.get_max_reference(1, "2", mode, (0, 7), EpsilonPlusFlat(), rf=True, plot_fn=None, batch_size=3)
        assert raw[1][1].shape == (7, 8, 8)


def test_relmax_heatmaps_start_at_the_target(setup: dict[str, Any]) -> None:
    fv, dataset = setup["fv"], setup["dataset"]
    oracle = crp_attribution.CondAttribution(setup["model"])
    for layer in LAYERS:
        concept = 1
        ids, _, _ = fv.index.samples(layer, concept, fv.relmax_mode, n=5)
        _samples, heatmaps = fv.get_max_reference(
            concept, layer, "relevance", (0, 5), EpsilonPlusFlat(), plot_fn=None, batch_size=2
        )[concept]
        data = torch.stack([dataset[i][0] for i in ids]).requires_grad_()
        conditions = [{layer: [concept], "y": [dataset[i][1]]} for i in ids]
        expected = oracle(data, conditions, EpsilonPlusFlat(), exclude_parallel=False).heatmap
        torch.testing.assert_close(heatmaps, expected.detach(), rtol=1e-5, atol=1e-7)
        # get_stats_reference starts at the class asked for
        label = dataset[ids[0]][1]
        key = f"{concept}:{label}"
        _stats_samples, stats_heat = fv.get_stats_reference(
            concept, layer, label, r_range=(0, 2), composite=EpsilonPlusFlat(), plot_fn=None
        )[key]
        class_ids, _ = fv.index.class_samples(layer, concept, label, n=2)
        data = torch.stack([dataset[i][0] for i in class_ids]).requires_grad_()
        expected = oracle(
            data, [{layer: [concept], "y": [label]}] * len(class_ids), EpsilonPlusFlat(), exclude_parallel=False
        ).heatmap
        torch.testing.assert_close(stats_heat, expected.detach(), rtol=1e-5, atol=1e-7)
