"""References from a concept index: the index's top samples, attributed as it ranked them, cached on disk."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from zennit.composites import EpsilonPlus

from glocal import Attributor
from glocal.index import ConceptIndex, build_index
from glocal.references import Reference, concept_references, receptive_field_boxes, reference_heatmaps
from glocal.storage import ReferenceCache

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
    for label in range(3):
        reference = concept_references(index, data, attributor, LAYER, CONCEPT, n=6, label=label)
        ids, scores = index.class_samples(LAYER, CONCEPT, label, 6)
        assert list(reference.sample_ids) == ids and ids
        assert all(int(data[i][1]) == label for i in ids)
        assert list(reference.scores) == pytest.approx(scores)
        assert reference.targets == (label,) * len(ids)
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
