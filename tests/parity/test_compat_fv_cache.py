"""glocal.compat.cache, .maximization and .statistics against zennit-crp's crp.cache, crp.maximization, crp.statistics.

An ImageCache written by one package is read by the other (same folder layout, same found and missing ranges), and
the result folders are named alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from zennit.composites import EpsilonPlusFlat

from glocal.compat import cache as compat_cache
from glocal.compat.attribution import CondAttribution
from glocal.compat.concepts import ChannelConcept
from glocal.compat.maximization import Maximization, index_mode
from glocal.compat.statistics import Statistics
from glocal.compat.visualization import FeatureVisualization
from glocal.errors import GlocalWarning, InputError

crp_cache = pytest.importorskip("crp.cache")
crp_maximization = pytest.importorskip("crp.maximization")
crp_statistics = pytest.importorskip("crp.statistics")


class Composite:  # the cache names folders after the composite's class
    pass


def pictures(count: int, seed: int) -> list[Image.Image]:
    generator = np.random.default_rng(seed)
    return [Image.fromarray(generator.integers(0, 255, (5, 4, 3), dtype=np.uint8)) for _ in range(count)]


def content(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(content(v) for v in value)
    return [np.asarray(p.convert("RGB")).tolist() for p in value]


@pytest.mark.parametrize(("writer", "reader"), [("glocal", "crp"), ("crp", "glocal")])
def test_image_cache_is_shared_with_zennit_crp(tmp_path: Path, writer: str, reader: str) -> None:
    caches = {"glocal": compat_cache.ImageCache(tmp_path), "crp": crp_cache.ImageCache(path=tmp_path)}
    settings = ("features.3", "relevance")
    saved = {3: (pictures(3, 0), pictures(3, 1)), 5: (pictures(3, 2), pictures(3, 3))}
    caches[writer].save(saved, *settings, (0, 3), Composite(), True, "get_max_reference", "vis_img_heatmap")
    opaque = {"3:1": pictures(2, 4)}
    caches[writer].save(opaque, *settings, (2, 4), Composite(), False, "get_stats_reference", "vis_opaque_img")
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png"))
    assert files[0] == "get_max_reference/vis_img_heatmap/relevance_Composite_rf/features.3/3_0_0.png"
    assert len(files) == 2 * 2 * 3 + 2
    for args in [
        ([3, 5, 7], *settings, (0, 3), Composite(), True, "get_max_reference", "vis_img_heatmap"),
        ([3], *settings, (1, 5), Composite(), True, "get_max_reference", "vis_img_heatmap"),
        (["3:1", "3:2"], *settings, (2, 4), Composite(), False, "get_stats_reference", "vis_opaque_img"),
        (["3:1"], *settings, (0, 4), Composite(), False, "get_stats_reference", "vis_opaque_img"),
    ]:
        found, missing = caches[reader].load(*args)
        expected_found, expected_missing = caches[writer].load(*args)
        assert missing == expected_missing
        assert {k: content(v) for k, v in found.items()} == {k: content(v) for k, v in expected_found.items()}
    found, missing = caches[reader].load(
        [3, 7], *settings, (0, 5), Composite(), True, "get_max_reference", "vis_img_heatmap"
    )
    assert missing == {3: (3, 5), 7: (0, 5)} and content(found[3]) == content(saved[3])
    extended = caches[reader].extend_dict(found, {3: (pictures(2, 5), pictures(2, 6)), 7: pictures(1, 7)})
    expected = caches[writer].extend_dict(
        {3: (list(saved[3][0]), list(saved[3][1]))}, {3: (pictures(2, 5), pictures(2, 6)), 7: pictures(1, 7)}
    )
    assert {k: content(v) for k, v in extended.items()} == {k: content(v) for k, v in expected.items()}


def test_image_cache_saves_pictures_only(tmp_path: Path) -> None:
    cache = compat_cache.ImageCache(tmp_path)
    with pytest.raises(InputError, match="PIL images"):
        cache.save({0: ([torch.zeros(3, 2, 2)], [])}, "l", "relevance", (0, 1), None, False, "get_max_reference", "f")
    with pytest.raises(NotImplementedError):
        compat_cache.Cache(tmp_path).load([0], "l", "relevance", (0, 1), None, False, "get_max_reference", "f")


@pytest.mark.parametrize("mode", ["relevance", "activation"])
@pytest.mark.parametrize("max_target", ["sum", "max"])
@pytest.mark.parametrize("abs_norm", [True, False])
def test_result_folders_are_named_alike(tmp_path: Path, mode: str, max_target: str, abs_norm: bool) -> None:
    ours, theirs = (
        Maximization(mode, max_target, abs_norm, tmp_path),
        crp_maximization.Maximization(mode, max_target, abs_norm, str(tmp_path)),
    )
    assert ours.PATH == theirs.PATH and ours.sub_folder == theirs.sub_folder and ours.SAMPLE_SIZE == 40
    ours_stats = Statistics(mode, max_target, abs_norm, tmp_path)
    theirs_stats = crp_statistics.Statistics(mode, max_target, abs_norm, str(tmp_path))
    assert ours_stats.PATH == theirs_stats.PATH
    expected = ("relmax_" if mode == "relevance" else "actmax_") + max_target
    if mode == "relevance":
        expected += "_norm" if abs_norm else ""
    else:
        expected += "_norm" if abs_norm else "_raw"
    assert ours.index_mode == index_mode(mode, max_target, abs_norm) == expected


def test_warnings_for_what_differs(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    layer_map = {"0": ChannelConcept()}
    with pytest.warns(GlocalWarning, match="max_target='max' with abs_norm=True"):
        FeatureVisualization(CondAttribution(model), [], layer_map, max_target="max", path=tmp_path)

    class MultiLabel(FeatureVisualization):
        def multitarget_to_single(self, multi_target: Any) -> list[int]:
            return [int(t) for t in multi_target]

    data = [(torch.rand(1, 4, 4), 0), (torch.rand(1, 4, 4), 1)]
    fv = MultiLabel(CondAttribution(model), data, layer_map, path=tmp_path / "multi", k=2)
    with pytest.warns(GlocalWarning, match="multitarget_to_single is not called"):
        fv.run(EpsilonPlusFlat(), 0, 2)
