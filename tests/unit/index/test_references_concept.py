"""References from a concept index: the index's top samples, attributed as it ranked them, cached on disk."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from zennit.composites import EpsilonPlus

from glocal import Attributor, ConceptError, GlocalWarning, LayerError, TargetError
from glocal.index import ConceptIndex, build_index
from glocal.index.references import Reference, concept_references, receptive_field_boxes, reference_heatmaps
from glocal.index.storage import ReferenceCache

LAYER = "2"  # the second conv: 4 channels on the 8x8 grid
CONCEPT = 1


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 3),
    ).eval()


def _dataset() -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(20, 1, 8, 8, generator=generator)
    labels = torch.arange(20) % 3
    return torch.utils.data.TensorDataset(images, labels)


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[torch.nn.Sequential, ConceptIndex, torch.utils.data.Dataset]:
    model, data = _net(), _dataset()
    directory = tmp_path_factory.mktemp("index") / "index"
    index = build_index(model, EpsilonPlus(), data, [LAYER], directory, k=6, batch_size=8, progress=False)
    return model, index, data


@contextmanager
def _count_forwards(model: torch.nn.Module) -> Iterator[list[int]]:
    calls = [0]

    def hook(module: torch.nn.Module, inputs: object, output: object) -> None:
        calls[0] += 1

    handle = model.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("mode", ["relmax_sum", "relmax_max_norm", "actmax_max"])
def test_returns_the_index_top_samples_in_order(built, mode: str) -> None:
    model, index, data = built
    reference = concept_references(index, data, Attributor(model, EpsilonPlus()), LAYER, CONCEPT, mode=mode, n=4)
    ids, scores, _ = index.samples(LAYER, CONCEPT, mode, 4)
    assert list(reference.sample_ids) == ids and len(ids) == 4
    assert list(reference.scores) == pytest.approx(scores)
    assert reference.mode == ("activation" if mode.startswith("actmax") else "relevance")
    assert reference.tensors.shape == (4, 3, 112, 112)  # greyscale shown as RGB
    assert all(image.size == (112, 112) and image.mode == "RGB" for image in reference.images)


@pytest.mark.parametrize("mode", ["relmax_sum", "actmax_sum"])
def test_heatmaps_and_boxes_equal_the_reference_functions(built, mode: str) -> None:
    model, index, data = built
    attributor = Attributor(model, EpsilonPlus())
    reference = concept_references(index, data, attributor, LAYER, CONCEPT, mode=mode, n=5)
    ids, _, positions = index.samples(LAYER, CONCEPT, mode, 5)
    samples = torch.stack([data[i][0] for i in ids])
    labels = [int(data[i][1]) for i in ids]
    kind = "relevance" if mode.startswith("relmax") else "activation"
    expected = reference_heatmaps(attributor, samples, LAYER, CONCEPT, labels, mode=kind)
    assert reference.heatmaps is not None
    torch.testing.assert_close(reference.heatmaps, expected)
    assert reference.targets == (tuple(labels) if kind == "relevance" else None)
    boxes = receptive_field_boxes(attributor, samples, LAYER, CONCEPT, positions, labels, mode=kind)
    assert list(reference.boxes) == boxes


@pytest.mark.parametrize("mode", ["relmax_sum", "actmax_max"])
def test_several_concepts_share_batches_and_equal_one_call_each(built, mode: str) -> None:
    """Concepts' samples attributed together (batches cut across concepts) give each concept's own references."""
    model, index, data = built
    attributor = Attributor(model, EpsilonPlus())
    channels = [3, 0, 2]
    with _count_forwards(model) as calls:
        together = concept_references(index, data, attributor, LAYER, channels, mode=mode, n=5, batch_size=4)
    assert list(together) == channels
    assert calls[0] == 4  # 15 samples in batches of 4 (model calls for targets by label need none)
    for channel in channels:
        alone = concept_references(index, data, attributor, LAYER, channel, mode=mode, n=5)
        batched = together[channel]
        assert batched.channel == channel and batched.sample_ids == alone.sample_ids
        assert batched.heatmaps is not None and alone.heatmaps is not None
        torch.testing.assert_close(batched.heatmaps, alone.heatmaps)
        assert batched.boxes == alone.boxes
        assert all(
            np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(batched.images, alone.images, strict=True)
        )


def test_per_class_references_hold_only_that_class(built) -> None:
    model, index, data = built
    attributor = Attributor(model, EpsilonPlus())
    found = 0
    for label in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GlocalWarning)  # some classes do not use the concept
            reference = concept_references(index, data, attributor, LAYER, CONCEPT, n=6, label=label)
        ids, scores = index.class_samples(LAYER, CONCEPT, label, 6)
        assert list(reference.sample_ids) == ids
        assert all(int(data[i][1]) == label for i in ids)
        assert all(score > 0 for score in scores)
        assert list(reference.scores) == pytest.approx(scores)
        assert reference.targets == ((label,) * len(ids) if ids else None)
        found += len(ids)
    assert found > 0
    with pytest.raises(ValueError, match="relmax_sum"):
        concept_references(index, data, attributor, LAYER, CONCEPT, mode="actmax_sum", label=0)


def test_prediction_targets_are_recomputed(tmp_path: Path) -> None:
    model = _net()
    inputs = _dataset().tensors[0]
    data = torch.utils.data.TensorDataset(inputs)  # no labels: the index starts from the prediction
    index = build_index(model, EpsilonPlus(), data, [LAYER], tmp_path / "index", k=4, progress=False)
    assert index.manifest["targets"] == "prediction"
    reference = concept_references(index, data, Attributor(model, EpsilonPlus()), LAYER, 0, n=3)
    ids = list(reference.sample_ids)
    with torch.no_grad():
        predicted = model(inputs[ids]).argmax(1).tolist()
    assert reference.targets == tuple(predicted)


def test_cache_hit_runs_no_model_and_settings_miss(built, tmp_path: Path) -> None:
    model, index, data = built
    cache = ReferenceCache(tmp_path / "references")

    def call(epsilon: float = 1e-6, crop: bool = True) -> tuple[Reference, int]:
        attributor = Attributor(model, EpsilonPlus(epsilon=epsilon))
        with _count_forwards(model) as calls:
            reference = concept_references(index, data, attributor, LAYER, CONCEPT, n=4, crop=crop, cache=cache)
        return reference, calls[0]

    first, forwards = call()
    assert forwards > 0
    assert len([p for p in cache.path.iterdir() if not p.name.startswith(".")]) == 1
    second, forwards = call()
    assert forwards == 0
    assert second.sample_ids == first.sample_ids and second.boxes == first.boxes
    assert second.targets == first.targets and second.heatmaps is None
    torch.testing.assert_close(second.tensors, first.tensors)
    for a, b in zip(first.images, second.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))

    assert call(epsilon=1e-2)[1] > 0  # another composite parameter
    assert call(crop=False)[1] > 0  # another crop setting
    assert call(epsilon=1e-2)[1] == 0  # each of them now cached
    entries = [p for p in cache.path.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 3


def test_corrupted_cache_entry_is_ignored_and_rewritten(built, tmp_path: Path) -> None:
    model, index, data = built
    cache = ReferenceCache(tmp_path / "references")
    attributor = Attributor(model, EpsilonPlus())
    first = concept_references(index, data, attributor, LAYER, CONCEPT, n=3, cache=cache)
    (entry,) = list(cache.path.iterdir())
    png = entry / "0.png"
    png.write_bytes(png.read_bytes()[:20])  # truncated
    with _count_forwards(model) as calls:
        again = concept_references(index, data, attributor, LAYER, CONCEPT, n=3, cache=cache)
    assert calls[0] > 0 and again.boxes == first.boxes
    assert cache.get(entry.name) is not None  # rewritten
    (entry / "entry.json").write_text("{not json")
    assert cache.get(entry.name) is None
    with _count_forwards(model) as calls:
        concept_references(index, data, attributor, LAYER, CONCEPT, n=3, cache=cache)
    assert calls[0] > 0 and cache.get(entry.name) is not None
    assert not [p for p in cache.path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_cache_key_covers_every_setting() -> None:
    base = {"index": {"composite": {"rules": {"0": {"behaviour": "a"}}}}, "layer": "2", "size": 112}
    assert ReferenceCache.key(base) == ReferenceCache.key(dict(reversed(list(base.items()))))
    assert ReferenceCache.key(base) != ReferenceCache.key({**base, "size": 64})
    changed = {**base, "index": {"composite": {"rules": {"0": {"behaviour": "b"}}}}}
    assert ReferenceCache.key(base) != ReferenceCache.key(changed)
    with pytest.raises(ValueError, match="sha256"):
        ReferenceCache(Path("/tmp")).get("../etc")


def test_to_image_is_used_and_keys_the_cache(built, tmp_path: Path) -> None:
    model, index, data = built
    cache = ReferenceCache(tmp_path / "references")
    attributor = Attributor(model, EpsilonPlus())

    def clipped(inputs: torch.Tensor) -> torch.Tensor:
        return inputs.clamp(0, 1).expand(-1, 3, -1, -1)

    reference = concept_references(
        index, data, attributor, LAYER, CONCEPT, n=2, to_image=clipped, crop=False, cache=cache
    )
    sample = data[reference.sample_ids[0]][0]
    expected = torch.nn.functional.interpolate(sample[None].expand(-1, 3, -1, -1), size=(112, 112), mode="bilinear")
    torch.testing.assert_close(reference.tensors[0], expected[0].clamp(0, 1))
    with _count_forwards(model) as calls:
        concept_references(index, data, attributor, LAYER, CONCEPT, n=2, crop=False, cache=cache)
    assert calls[0] > 0  # the default to_image is another entry


def test_concepts_without_positive_scores_get_fewer_references_and_a_warning(built) -> None:
    model, index, data = built
    attributor = Attributor(model, EpsilonPlus())
    stats = index.statistics(LAYER)
    top = stats.top["relmax_sum"]
    positive = (top.scores > 0).sum(1).tolist()  # per concept, how many kept samples have positive relevance
    assert min(positive) < index.manifest["k"], "the fixture should have a concept with non-positive scores"
    with pytest.warns(GlocalWarning, match="fewer than 6 samples with a positive relevance score"):
        references = concept_references(index, data, attributor, LAYER, list(range(4)), n=6)
    for concept, reference in references.items():
        assert len(reference.sample_ids) == positive[concept]
        assert all(score > 0 for score in reference.scores)
        expected = top.ids[concept][top.scores[concept] > 0].tolist()
        assert list(reference.sample_ids) == expected
        assert reference.grid().size[0] > 0  # an empty reference still draws (one empty cell)


def test_an_all_negative_concept_returns_no_samples(tmp_path: Path) -> None:
    # relevance of class 0 only flows through channel 0, with a negative output weight: channel 0 has only negative
    # relevance, so it gets no references
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(72, 1))
    with torch.no_grad():
        model[0].weight.abs_()
        model[0].bias.zero_()
        model[3].weight.zero_()
        model[3].weight[0, :36] = -1.0
    data = torch.utils.data.TensorDataset(torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long))
    index = build_index(model, EpsilonPlus(), data, ["0"], tmp_path / "index", k=4, progress=False)
    assert index.samples("0", 0) == ([], [], [])
    assert index.top("0").ids[0].tolist() != [-1] * 4  # the index kept samples, with scores <= 0
    with pytest.warns(GlocalWarning, match="an empty Reference when none"):
        reference = concept_references(index, data, Attributor(model, EpsilonPlus()), "0", 0, n=3)
    assert reference.sample_ids == () and reference.images == () and reference.tensors.shape[0] == 0


def test_index_methods_name_the_valid_range(built) -> None:
    _, index, _ = built
    for call in (
        lambda: index.samples(LAYER, 999),
        lambda: index.samples(LAYER, -1),
        lambda: index.class_samples(LAYER, 4, 0),
        lambda: index.classes(LAYER, 999),
    ):
        with pytest.raises(ConceptError, match=r"layer '2' has 4 concepts \(channels 0 to 3\)"):
            call()
    with pytest.raises(TargetError, match=r"3 classes \(0 to 2\)"):
        index.class_samples(LAYER, 0, 7)
    for call in (lambda: index.samples("nope", 0), lambda: index.statistics("nope"), lambda: index.matrix("nope")):
        with pytest.raises(LayerError, match=r"no layer 'nope'; it indexes \['2'\]"):
            call()
    with pytest.raises(ValueError, match="mode must be one of"):
        index.samples(LAYER, 0, "relmax")
    with pytest.raises(KeyError, match="store_matrix=True"):
        index.matrix(LAYER)


def test_actmax_references_of_an_unrectified_conv_are_not_blank(tmp_path: Path) -> None:
    """The pretrained MNIST CNN records ``conv_layers.6`` before its ReLU: every channel's raw activation sums to
    less than zero on every digit, so ranking and starting heatmaps from it faded every reference out."""
    from zennit.composites import EpsilonPlusFlat

    from real_models import mnist_cnn, mnist_digits

    torch.set_num_threads(1)
    model = mnist_cnn()
    images, labels = mnist_digits(120)
    data = torch.utils.data.TensorDataset(images, labels)
    layer = "conv_layers.6"
    index = build_index(
        model, EpsilonPlusFlat(), data, [layer], tmp_path / "index", k=4, batch_size=120, progress=False
    )
    recorded: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: recorded.append(o.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    activation = recorded[0].flatten(2)  # (120, 128, 49)
    assert bool((activation.sum(-1) < 0).all())  # the raw ActMax score is negative for every digit and channel
    positive = activation.clamp(min=0).sum(-1)
    channels = [0, 1, 2, 3]
    for channel in channels:  # the index ranks by the positive activation, ties by the smaller id
        ids, scores, positions = index.samples(layer, channel, "actmax_sum", 4)
        expected = sorted(range(120), key=lambda i: (-float(positive[i, channel]), i))[:4]
        assert ids == expected
        torch.testing.assert_close(torch.tensor(scores), positive[expected, channel], rtol=1e-5, atol=1e-5)
        assert positions == activation[expected, channel].argmax(-1).tolist()  # the most active unit
    references = concept_references(
        index, data, Attributor(model, EpsilonPlusFlat()), layer, channels, mode="actmax_sum", n=4, progress=False
    )
    for channel, reference in references.items():
        assert reference.heatmaps is not None and len(reference.sample_ids) == 4
        mass = reference.heatmaps.clamp(min=0).flatten(1).sum(1)
        assert bool((mass > 1.0).all()), (channel, mass)  # measured 2.7 to 17.4 (the raw start gave 0)
        for heatmap, (top, left, bottom, right) in zip(reference.heatmaps, reference.boxes, strict=True):
            crop = heatmap[top:bottom, left:right]
            shown = (crop > 0.2 * crop.max()).float().mean()  # the part render_references does not fade
            assert crop.max() > 0 and shown > 0.02, (channel, float(shown))


def test_an_index_of_an_older_glocal_warns_that_its_actmax_is_raw(built, tmp_path: Path) -> None:
    import json
    import shutil

    _, index, _ = built
    old = tmp_path / "old"
    shutil.copytree(index.store.path, old)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest.pop("scores") == 2
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(GlocalWarning, match="older glocal: its actmax_sum/actmax_max rank the raw activation"):
        ConceptIndex.open(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ConceptIndex.open(index.store.path)


def test_classes_lists_only_classes_that_occur(tmp_path: Path) -> None:
    """A class without samples is not ranked: before, its 0.0 came ahead of classes with negative mean relevance."""
    model = _net()
    images = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 2] * 6)  # class 1 never occurs
    data = torch.utils.data.TensorDataset(images, labels)
    index = build_index(model, EpsilonPlus(), data, [LAYER], tmp_path / "index", k=4, progress=False)
    stats = index.statistics(LAYER)
    assert stats.class_count is not None and stats.class_relevance is not None
    assert stats.class_count.tolist() == [6, 0, 6]
    for concept in range(4):
        for mean in (True, False):
            listed = index.classes(LAYER, concept, n=3, mean=mean)
            assert sorted(c for c, _ in listed) == [0, 2]
            assert [v for _, v in listed] == sorted((v for _, v in listed), reverse=True)
            for label, value in listed:
                total = float(stats.class_relevance[label, concept])
                assert value == pytest.approx(total / 6 if mean else total)
    # by hand: each sample's channel relevance at the layer (summed over space), attributed from its label
    attributor = Attributor(model, EpsilonPlus())
    by_hand = torch.zeros(3, 4)
    for image, label in zip(images, labels.tolist(), strict=True):
        relevance = attributor(image[None], [{"y": [label]}], record=[LAYER]).relevances[LAYER]
        by_hand[label] += relevance.sum((2, 3))[0]
    expected = sorted([(0, float(by_hand[0, 1]) / 6), (2, float(by_hand[2, 1]) / 6)], key=lambda c: -c[1])
    assert expected[0][1] < 0  # both classes' mean relevance is negative: the old ranking put class 1's 0.0 first
    listed = index.classes(LAYER, 1, n=3)
    assert [c for c, _ in listed] == [c for c, _ in expected]
    assert [v for _, v in listed] == pytest.approx([v for _, v in expected], rel=1e-4)


def test_references_warn_when_the_attributor_is_not_the_one_that_built_the_index(built) -> None:
    from zennit.composites import EpsilonPlusFlat

    model, index, data = built
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        concept_references(index, data, Attributor(model, EpsilonPlus()), LAYER, CONCEPT, n=2)  # the same: silent
    assert not [r for r in records if "the index was built with" in str(r.message)]
    with pytest.warns(GlocalWarning, match=r"attributor's composite differ from those the index was built with"):
        concept_references(index, data, Attributor(model, EpsilonPlusFlat()), LAYER, CONCEPT, n=2)
    other = _net()
    with torch.no_grad():
        other[0].weight.mul_(2)
    with pytest.warns(GlocalWarning, match=r"attributor's model differ"):
        concept_references(index, data, Attributor(other, EpsilonPlus()), LAYER, CONCEPT, n=2)
